"""What runs inside the serving processes: the bento's service, its batcher, the inference log writer, the front.

Nothing here is a Prefect task. The package imports only the standard library, its own modules
and, lazily, the serving stack (bentoml, pydantic, pandas, pyarrow, mlflow), never ``tasks`` or
``blocks``: ``tasks/bentoml_packaging.py`` copies it whole into every bento as ``mlops_serving/``
(every module uses relative imports, so it works under either name), next to a two-line
``service.py``::

    from mlops_serving.service import build_service
    MlopsModelService = build_service(__file__)

and ``mlops_bento.json`` (model tag, registry name / version / run id / data rev, the MLflow
signature's columns and the input example, task type, classes, passthrough columns).

Modules:

* ``common``: the config file name, environment variables, headers, runtime settings, JSON encoding;
* ``schema``: the request schema derived from the MLflow signature, and the 4xx bodies naming each field;
* ``predictor``: predictions, scores and probabilities of the loaded model (batch scoring uses it too);
* ``batcher``: adaptive micro-batching, scored off the event loop, journaled before answering;
* ``runtime``: one worker's state and its ASGI endpoints (``POST /predict``, ``GET /model`` ...);
* ``openapi``: ``/docs.json`` describing the custom routes with schemas from the signature;
* ``service``: :func:`~.service.build_service` and the patch of BentoML's ``TimeoutMiddleware``;
* ``log_layout`` / ``journal`` / ``log_writer``: the inference log's layout (shared with the readers in
  ``tasks/inference_log.py``), its journal, and its writer;
* ``front``: the stable endpoint, a reverse proxy that switches between backends without dropping a
  connection (``python -m tasks._serving.front --host 127.0.0.1 --port 3000``).

``bentoml serve`` of such a bento answers:

- ``POST /predict``: one record (a JSON object) or a batch (a JSON array of records), validated
  against a schema derived from the MLflow signature (named, typed columns; extra, missing or
  mistyped fields, NaN where the column is required, empty or oversized batches and bodies
  that are not JSON get a 4xx naming the field). Concurrent requests are scored together
  (adaptive micro-batching, one ``predict`` per batch) and every prediction is written to the
  inference log before it is answered.
- ``GET /model`` (what serves, its lineage), ``GET /schema`` (JSON schema of the request),
  ``GET /inference-log/stats``; BentoML's own ``/healthz``, ``/livez``, ``/readyz``.

The predict route is a plain ASGI endpoint mounted into the BentoML app, and OpenTelemetry
request tracing is off for it unless asked for: each costs more than the model itself here
(see :class:`~.runtime.PredictEndpoint`).
"""
