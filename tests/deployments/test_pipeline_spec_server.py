"""`prefect-mlops spec deploy` against the real Prefect server, read back as a spec."""

from __future__ import annotations

from pathlib import Path

from deployments.definitions import PROJECT_ROOT
from deployments.pipeline_spec_deploy import to_definitions
from deployments.pipeline_spec_yaml import validate_text

EXAMPLE = PROJECT_ROOT / "examples" / "mlops-pipeline.yaml"


def test_spec_deploy_registers_what_the_spec_says(prefect_server: str, tmp_path: Path) -> None:
    """`spec deploy` saves the inline blocks and registers the deployments; reading the server back gives them."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from blocks.promotion_policy import PromotionPolicy
    from deployments.cli import main
    from deployments.pipeline_spec_server import spec_from_server

    pool = "spec-pool"

    async def create_pool() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)

    async def delete() -> None:  # other tests serve deployments of the same names from a runner: leave none here
        from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

        async with get_client() as client:
            for deployment in await client.read_deployments(
                    work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))):
                await client.delete_deployment(deployment.id)
            await client.delete_work_pool(pool)

    asyncio.run(create_pool())
    spec_file = tmp_path / "pipeline.yaml"
    text = EXAMPLE.read_text().replace("name: churn\n", "name: spec-test\n")
    spec_file.write_text(text)
    try:
        assert main(["spec", "deploy", str(spec_file), "--work-pool", pool]) == 0
        assert PromotionPolicy.load("spec-test-promotion").floors == {"roc_auc": 0.6}
        served = spec_from_server(name="spec-test", work_pool=pool)
    finally:
        asyncio.run(delete())
    wanted = to_definitions(validate_text(text))

    def comparable(defs: list) -> dict:
        return {(d.entrypoint, d.name): (d.cron, d.interval, d.parameters, d.tags,
                                         sorted((sorted(t.events), t.cooldown, t.labels, t.parameters)
                                                for t in d.triggers)) for d in defs}

    assert comparable(to_definitions(served)) == comparable(wanted)
