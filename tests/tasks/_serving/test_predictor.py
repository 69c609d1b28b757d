"""The serving predictor gives exactly what the fitted pipeline gives (no server)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.no_server


@pytest.mark.parametrize("estimator", ["sklearn.linear_model.LogisticRegression",
                                       "sklearn.ensemble.RandomForestClassifier"])
def test_predictor_gives_exactly_what_the_pipeline_gives(estimator: str) -> None:
    from tasks._serving.predictor import Predictor
    from tasks.sample_data import make_customer_frame
    from tasks.sklearn_training import build_pipeline, make_estimator

    frame = make_customer_frame(600, seed=3)
    features = [c for c in frame.columns if c not in ("churned", "event_time")]
    params = {"n_estimators": 20, "random_state": 0} if "Forest" in estimator else {"max_iter": 500}
    pipeline = build_pipeline(make_estimator(estimator, params), frame, features)
    pipeline.fit(frame[features], frame["churned"])
    predictions, scores = Predictor(pipeline)(frame[features])
    assert predictions.tolist() == pipeline.predict(frame[features]).tolist()
    assert np.array_equal(scores, pipeline.predict_proba(frame[features])[:, 1])
