"""The ML Test Score's 28 checks and its scoring rules on hand-made evidence (pure functions: no server)."""

from __future__ import annotations

import json

import pytest

from tasks.ml_test_checks import CANNOT_AUTOMATE, CHECKS, ITEMS, SECTIONS, Evidence
from tasks.ml_test_score import MANUAL_PREFIX, project_tests, score_pipeline

pytestmark = pytest.mark.no_server


def test_the_rubric_has_the_papers_28_tests_in_four_sections_of_seven() -> None:
    assert list(CHECKS) == list(ITEMS) and len(ITEMS) == 28
    for section in SECTIONS:
        assert [k for k, (s, _) in ITEMS.items() if s == section] == [f"{section}_{n}" for n in range(1, 8)]
    assert ITEMS["model_5"][1] == "A simpler model is not better"
    assert ITEMS["infra_1"][1] == "Training is reproducible"


def test_no_evidence_scores_zero_with_a_reason_for_every_item() -> None:
    score = score_pipeline(Evidence(model_name="m", version="1"))
    assert score.score == 0 and set(score.sections.values()) == {0}
    assert all(i.points == 0 and i.mode == "none" and i.note for i in score.items)
    assert score.description == "ML Test Score 0 (data 0, model 0, infra 0, monitoring 0)"


def test_points_name_their_evidence_manual_counts_half_and_the_score_is_the_lowest_section() -> None:
    tags = {"mlops.gate.baseline": json.dumps({"metric": "roc_auc", "baseline": 0.5, "challenger": 0.8,
                                               "model": "DummyClassifier", "beaten": True}),
            "mlops.gate.non_finite_predictions": "0", "mlops.gate.verdict": "promoted",
            "mlops.rollout.infra_validation": "passed", "mlops.infra.rps": "310.2",
            MANUAL_PREFIX + "data_3": "feature costs reviewed by A. Lee on 2026-12-01: docs/feature-costs.md"}
    evidence = Evidence(model_name="m", version="2", version_tags=tags, trials=4,
                        test_files=["tests/test_continuous_training_loop.py"],
                        evaluation={"slice_gaps": {"region": 0.03}, "fairness": {"attribute": "gender",
                                                                                 "disparity": 0.02}})
    score = score_pipeline(evidence)
    items = {i.id: i for i in score.items}
    assert items["model_5"].points == 1 and items["model_5"].passed and "tag mlops.gate.baseline" in \
        items["model_5"].evidence
    assert items["data_3"].points == 0.5 and items["data_3"].mode == "manual"
    assert CANNOT_AUTOMATE["data_3"] in items["data_3"].note and "A. Lee" in items["data_3"].evidence[0]
    assert all(i.evidence for i in score.items if i.points > 0)
    assert score.sections == {"data": 0.5, "model": 4.0, "infra": 3.0, "monitoring": 2.0}
    assert score.score == 0.5
    assert score.markdown().count("| 0 | none |") == 28 - sum(1 for i in score.items if i.points > 0)
    assert score.rows()[0]["test"] == "data_1: Feature expectations are captured in a schema"


def test_this_projects_tests_cover_the_checks_that_name_them() -> None:
    files, by_module = project_tests()
    assert "tests/tasks/test_promotion_gate.py" in files
    assert "tests/tasks/test_sklearn_training.py" in by_module["tasks.sklearn_training"]
