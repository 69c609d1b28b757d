"""A bento's container recipe: its Dockerfile (``bentoml.container.get_containerfile``), an image where Docker runs.

The Dockerfile (~90 lines) is stored on the model version's MLflow run (:func:`store_container_recipe`)
and linked from summaries, never pasted into them.

``bentoml`` runs in a subprocess with the :class:`BentoMLServing` block's ``BENTOML_HOME``
(``tasks.bentoml_packaging.run_bentoml``), so the Prefect worker never imports BentoML.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.bentoml_serving import BentoMLServing
from blocks.mlflow_server import MlflowServer
from tasks.bentoml_packaging import BentoInfo, run_bentoml
from tasks.logs import run_logger


class ContainerRecipe(BaseModel):
    """Where a bento's Dockerfile is, and the image if one could be built here."""

    bento_tag: str
    dockerfile: str
    image: str | None
    message: str


_CONTAINERFILE_SCRIPT = r"""
import sys
import bentoml
bentoml.container.get_containerfile(sys.argv[1], output_path=sys.argv[2])
"""


def docker_available() -> bool:
    """Return whether a Docker engine answers here (``docker info``)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@task(name="write-container-recipe", cache_policy=NO_CACHE)
def write_container_recipe(serving: BentoMLServing, bento: BentoInfo, containerize: bool = True) -> ContainerRecipe:
    """Write the bento's Dockerfile (``bentoml.container.get_containerfile``), and build the image where Docker runs.

    Without a Docker engine the Dockerfile is still written, so the image can be built
    elsewhere (``docker build`` from the bento folder, or ``bentoml containerize``); the result
    says so instead of failing.

    Args:
        serving: The BentoML serving block.
        bento: The bento.
        containerize: Run ``bentoml containerize`` when a Docker engine answers.

    Returns:
        The Dockerfile path, the image tag (or None) and a message for the person reading.

    Raises:
        PackagingError: If BentoML cannot produce the Dockerfile or the image build fails.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def recipe(b: BentoInfo) -> str:
        ...     return write_container_recipe(BentoMLServing.embedded(), b).dockerfile
    """
    logger = run_logger()
    out_dir = serving.home() / "containerfiles" / bento.tag.replace(":", "-")
    out_dir.mkdir(parents=True, exist_ok=True)
    dockerfile = out_dir / "Dockerfile"
    if not (dockerfile.is_file() and dockerfile.stat().st_size > 0):  # a bento's tag names its content: reuse
        run_bentoml(serving, [sys.executable, "-c", _CONTAINERFILE_SCRIPT, bento.tag, str(dockerfile)],
                     f"Writing the Dockerfile of bento {bento.tag}")
    image = None
    if containerize and docker_available():
        run_bentoml(serving, [sys.executable, "-m", "bentoml", "containerize", bento.tag, "-t", bento.tag],
                     f"bentoml containerize {bento.tag}", timeout_s=3600)
        image = bento.tag
        message = f"Built image {image} with `bentoml containerize`."
    else:
        message = (f"No Docker engine here: the image was not built. Build it where Docker runs with "
                   f"`BENTOML_HOME={serving.home()} bentoml containerize {bento.tag}`, or `docker build -f "
                   f"{dockerfile} {bento.path}`.")
    # The Dockerfile stays a file (~90 lines): the deploy summary artifact names its path.
    logger.info("Dockerfile of %s at %s. %s", bento.tag, dockerfile, message)
    return ContainerRecipe(bento_tag=bento.tag, dockerfile=str(dockerfile), image=image, message=message)


@task(name="store-container-recipe", cache_policy=NO_CACHE)
def store_container_recipe(mlflow_server: MlflowServer, recipe: ContainerRecipe, run_id: str | None) -> str | None:
    """Store the bento's Dockerfile on the version's MLflow run (``bento/<bento version>/Dockerfile``); return its link.

    Called after the swap (the model already serves), so a failure is logged and None returned:
    the summary then names the local file instead.

    Args:
        mlflow_server: The MLflow block.
        recipe: The recipe from :func:`write_container_recipe` (nothing stored when its ``dockerfile`` is empty).
        run_id: The registry version's run (``BentoInfo.run_id``).

    Returns:
        The MLflow UI link of the artifact (its artifact URI when there is no UI), or None.

    Examples:
        >>> from prefect import flow
        >>> @flow
        ... def link(recipe: ContainerRecipe, run_id: str) -> str | None:
        ...     return store_container_recipe(MlflowServer.embedded(), recipe, run_id)
    """
    if not recipe.dockerfile or not run_id:
        return None
    folder = f"bento/{recipe.bento_tag.split(':', 1)[-1]}"
    try:
        client = mlflow_server.get_client()
        client.log_artifact(run_id, recipe.dockerfile, folder)
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - the model serves; the summary names the local file instead
        run_logger().warning("Storing the Dockerfile of %s on MLflow run %s failed: %s", recipe.bento_tag, run_id, exc)
        return None
    path = f"{folder}/Dockerfile"
    base = mlflow_server.ui_url()
    if not base:
        return f"{run.info.artifact_uri}/{path}"
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts/{path}"
