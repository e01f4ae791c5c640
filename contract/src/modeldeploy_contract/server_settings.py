"""Settings of the model server (`modeldeploy serve`), read from MODELDEPLOY_SERVER_* variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from modeldeploy_contract.model_store import ModelFormat

ENV_PREFIX = "MODELDEPLOY_SERVER_"


class ServerSettings(BaseSettings):
    """Everything the model server can be told; every field is one MODELDEPLOY_SERVER_<NAME> variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    model_uri: str = ""
    """Where the model bundle lives: a local path, file://, http(s)://, s3:// or gs:// URI, an Azure
    Blob URL (https://<account>.blob.core.windows.net/<container>/<path>), or pvc://<claim>/<path>: the
    claim mounted (read-only) at /mnt/models/<claim>, as the operator does."""

    model_name: str | None = None
    """Name the model is served under; defaults to the name in the bundle's manifest."""

    model_sha256: str | None = None
    """Expected sha256 of the bundle's manifest; loading fails closed when it differs."""

    model_version: str | None = None
    """The version the deployment names for this model (the operator sets spec.model.version): loading
    fails closed when the bundle's manifest names another (not ready, reason ModelVersionMismatch on
    /v2/health/ready), so a spec and the bundle it points at cannot silently disagree. One leading v
    is not a difference: 2 and v2 are one version."""

    model_format: ModelFormat = "auto"
    """The format the deployment names for this model (the operator sets spec.model.format): with
    xgboost or onnx, loading fails closed when the bundle cannot be served as that format (not ready,
    reason ModelFormatMismatch on /v2/health/ready); auto serves either."""

    host: str = "0.0.0.0"
    """Address to bind; in a pod this is the pod's IP or 0.0.0.0."""

    port: int = Field(default=8080, ge=1, le=65535)
    """TCP port for the HTTP API and /metrics."""

    workers: int = Field(default=1, ge=1, le=64)
    """Worker processes; metrics are aggregated across them."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest accepted request body; larger bodies get HTTP 413 with a JSON error."""

    max_batch_rows: int = Field(default=10_000, ge=1)
    """Most rows accepted in one inference request; more get HTTP 400."""

    max_concurrent_requests: int = Field(default=256, ge=1)
    """Most inference requests a worker holds at once (reading, queued or predicting); more get a
    fast HTTP 503 with Retry-After and a JSON body, counted in modeldeploy_requests_refused_total.
    256 one-row requests are ~2 ms of model work; together with max_queued_rows it bounds the
    memory and the queueing delay of a worker under overload."""

    max_queued_rows: int = Field(default=20_000, ge=1)
    """Most rows a worker has accepted but not yet predicted (micro-batch queue and model calls in
    flight); a request that would go beyond gets a fast 503 with Retry-After. 20,000 rows of this
    project's models are well under a second of model work."""

    retry_after_seconds: int = Field(default=1, ge=0, le=3600)
    """The Retry-After value of overload refusals (503), in seconds."""

    offload_body_bytes: int = Field(default=256 * 1024, ge=0)
    """Request bodies at least this large are decoded in a worker thread (the event loop keeps
    answering probes and small requests meanwhile), and the request is abandoned as soon as its
    client disconnects; 0 offloads every body."""

    header_read_timeout_seconds: float = Field(default=10.0, gt=0)
    """A connection that has not sent a complete request head (line and headers) this long after
    it opened, or after its previous response, is closed (slow-header clients)."""

    body_read_timeout_seconds: float = Field(default=30.0, gt=0)
    """A request whose body has not fully arrived this long after its head is answered 408 and its
    connection closed (slow-body clients)."""

    keep_alive_seconds: float = Field(default=5.0, gt=0)
    """Idle keep-alive connections are closed after this long (uvicorn's timeout_keep_alive)."""

    max_connections: int = Field(default=4096, ge=1)
    """Most open connections per worker; beyond, uvicorn answers 503 at once (limit_concurrency
    counts connections and requests together in uvicorn)."""

    batching_enabled: bool = True
    """Merge concurrent requests into one model call (adaptive micro-batching; see docs/benchmarks.md)."""

    batch_max_size: int = Field(default=64, ge=1)
    """Most rows in one micro-batch."""

    batch_max_wait_ms: float = Field(default=0.0, ge=0)
    """Longest a request waits for others to join its micro-batch, in milliseconds; 0 closes the
    batch at the next turn of the event loop (requests that arrived together share a model call,
    a lone request waits for nothing)."""

    drift_enabled: bool = True
    """Compute input and prediction drift against the bundle's reference profile."""

    drift_window_rows: int = Field(default=1000, ge=10)
    """Rows in one drift window; statistics are computed when a window closes."""

    drift_window_seconds: float = Field(default=60.0, gt=0)
    """A window with at least one row also closes after this many seconds (low traffic)."""

    drift_max_feature_series: int = Field(default=100, ge=1, le=10_000)
    """Features with drift series of their own (the first ones in the model's input order); the
    rest are summarised in one `feature="_other"` series per statistic holding their largest value,
    so a wide model cannot make thousands of series per pod, and a max over features still sees
    every feature."""

    drift_max_cpu_share: float = Field(default=0.02, gt=0, le=1)
    """Most of a worker's CPU that drift statistics may use: after a window's statistics took t
    seconds, incoming rows are not buffered for t * (1 / share - 1) seconds, so under heavy load the
    windows become evenly spaced samples of the traffic instead of a cost on every request."""

    model_cache_dir: str = "/tmp/modeldeploy-models"  # noqa: S108 (an emptyDir in a pod; private per container)
    """Where downloaded bundles are unpacked; an emptyDir in a pod."""

    max_artifact_bytes: int = Field(default=2 * 1024**3, ge=1)
    """Largest model artifact that will be downloaded; larger ones fail closed."""

    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible store (MinIO, moto, ...) for s3:// URIs."""

    gcs_endpoint_url: str = "https://storage.googleapis.com"
    """Endpoint for gs:// URIs (objects are read through the GCS JSON API with a token from
    GOOGLE_OAUTH_ACCESS_TOKEN, else Application Default Credentials, else anonymously)."""

    azure_blob_endpoint_url: str | None = None
    """Replaces https://<account>.blob.core.windows.net of Azure Blob URIs (an emulator, e.g.
    http://127.0.0.1:10000/devstoreaccount1); unset, the URI's own host is used."""

    download_timeout_seconds: float = Field(default=300.0, gt=0)
    """Timeout of one artifact download (http(s), s3, gs, Azure Blob)."""

    prefer_onnx: bool = True
    """Serve an XGBoost bundle through its ONNX export (same predictions, far cheaper per call)
    when the bundle has one; the XGBoost file stays the source of truth that pack checked it against."""

    onnx_threads: int = Field(default=1, ge=0, le=64)
    """onnxruntime intra-op threads per worker; 0 lets onnxruntime use every core."""

    xgboost_batch_rows: int = Field(default=64, ge=0)
    """With prefer_onnx, model calls of at least this many rows still go to xgboost: onnxruntime's
    tree ensemble costs about 4 us a row, xgboost about 0.2 ms a call but under 1 us a row. 0 = never."""

    xgboost_threads: int = Field(default=0, ge=0, le=64)
    """xgboost threads per model call; 0 lets xgboost use every core."""

    drain_seconds: float = Field(default=5.0, ge=0)
    """On shutdown, how long in-flight requests may take to finish before the process exits."""

    log_level: str = "info"
    """Log level of the server: debug, info, warning or error."""

    def to_env(self, *, include_defaults: bool = False) -> dict[str, str]:
        """The variables that reproduce these settings in another process (non-default fields only,
        unless include_defaults: then every field, so that stale variables cannot leak through)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(exclude_defaults=not include_defaults).items():
            if value is None:
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            env[ENV_PREFIX + name.upper()] = text
        return env
