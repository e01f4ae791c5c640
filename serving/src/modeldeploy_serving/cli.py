"""`modeldeploy`: serve a model bundle, or pack one.

    modeldeploy serve --model-uri URI [--name NAME] [--host H] [--port P] [--workers N]
    modeldeploy pack --model FILE [--onnx FILE] --train-data FILE [--validation-data FILE]
                     [--label COLUMN] --name NAME --version V --out DIR

serve reads ServerSettings from MODELDEPLOY_SERVER_* variables; flags override them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from modeldeploy_contract.server_settings import ServerSettings

    overrides = {
        "model_uri": args.model_uri,
        "model_name": args.name,
        "model_sha256": args.model_sha256,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
    }
    settings = ServerSettings(**{k: v for k, v in overrides.items() if v is not None})
    # Workers are separate processes that build their settings from the environment: hand them the
    # merged result (every field, so a flag always beats a variable set earlier).
    os.environ.update(settings.to_env(include_defaults=True))
    if settings.workers > 1:
        # Must be set before prometheus_client is imported anywhere (it picks its value store then).
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="modeldeploy-metrics-")
        shutil.rmtree(folder, ignore_errors=True)  # stale files of an earlier run would be summed in
        Path(folder).mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        from modeldeploy_serving.workers import WORKER_STATE_DIR

        os.environ[WORKER_STATE_DIR] = tempfile.mkdtemp(prefix="modeldeploy-workers-")
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

    import uvicorn

    from modeldeploy_serving.slowclients import GuardedHttpToolsProtocol

    uvicorn.run(
        "modeldeploy_serving.app:create_app",
        factory=True,
        interface="asgi3",  # InferenceApp.__call__ is a plain method returning a coroutine
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        access_log=False,  # one log line per request would cost more than the prediction
        timeout_graceful_shutdown=int(settings.drain_seconds) or None,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-* are not used, and the middleware is one more layer per request
        http=GuardedHttpToolsProtocol,  # head and body read deadlines (slowclients.py)
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]  # a float works
        limit_concurrency=settings.max_connections,
    )
    return 0


def _pack(args: argparse.Namespace) -> int:
    from modeldeploy_serving.pack import PackError, pack
    from modeldeploy_serving.tabular import TableError

    try:
        result = pack(
            model=args.model,
            onnx=args.onnx,
            train_data=args.train_data,
            validation_data=args.validation_data,
            label=args.label,
            name=args.name,
            version=args.version,
            out=args.out,
            force=args.force,
        )
    except (PackError, TableError, OSError, ValueError) as exc:
        print(f"modeldeploy pack: {exc}", file=sys.stderr)
        return 2
    parity = (
        f", ONNX parity max |diff| {result.parity_max_abs_diff:.2e} on {result.parity_rows} rows"
        if result.parity_max_abs_diff is not None
        else ""
    )
    print(f"packed {result.out} (manifest sha256 {result.digest}{parity})")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="modeldeploy", description=__doc__.split("\n")[0] if __doc__ else None
    )
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a model bundle over V2/V1 REST with /metrics")
    serve.add_argument("--model-uri", help="bundle folder: path, file://, http(s)://, s3:// or gs://")
    serve.add_argument("--name", help="serve the model under this name (default: the manifest's)")
    serve.add_argument("--model-sha256", help="expected sha256 of the bundle's manifest.json")
    serve.add_argument("--host", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.set_defaults(func=_serve)

    p = sub.add_parser("pack", help="write a model bundle with its reference profile")
    p.add_argument("--model", type=Path, required=True, help="XGBoost .ubj/.json, or an .onnx model")
    p.add_argument("--onnx", type=Path, help="ONNX export of the XGBoost model (checked for parity)")
    p.add_argument("--train-data", type=Path, required=True, help="CSV or Parquet, features in model order")
    p.add_argument("--validation-data", type=Path, help="CSV or Parquet held out from training")
    p.add_argument("--label", help="label column to leave out of the features")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_pack)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
