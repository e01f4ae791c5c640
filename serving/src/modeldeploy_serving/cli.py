"""`modeldeploy`: serve a model bundle (REST or a Kafka stream), pack one, replay its golden set, join labels.

    modeldeploy serve --model-uri URI [--name NAME] [--host H] [--port P] [--workers N]
    modeldeploy stream --model-uri URI --bootstrap-servers HOSTS --input-topic T --output-topic T
                       --group G [--dead-letter-topic T] [--revision R] [--name NAME] [--port P]
    modeldeploy pack --model FILE [--onnx FILE | --no-onnx] --train-data FILE [--validation-data FILE]
                     [--label COLUMN] --name NAME --version V --out DIR [--golden-data FILE]
    modeldeploy preflight --bundle DIR|URI --url URL [--stable-url URL] [--format json|text]
    modeldeploy joiner [--host H] [--port P] [--database sqlite:///PATH|postgresql://...]

exit codes of preflight: 0 passed, 1 failed, 2 could not run.

serve reads ServerSettings from MODELDEPLOY_SERVER_* variables, joiner JoinerSettings from
MODELDEPLOY_JOINER_* ones; flags override them. stream reads the ServerSettings too (model, batching,
drift, the health/metrics port) and StreamSettings from MODELDEPLOY_STREAM_*.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from modeldeploy_contract.preflight import DEFAULT_TOLERANCE


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


def _stream(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from modeldeploy_contract.server_settings import ServerSettings
    from modeldeploy_contract.stream_settings import StreamSettings

    server_flags = {
        "model_uri": args.model_uri,
        "model_name": args.name,
        "host": args.host,
        "port": args.port,
    }
    stream_flags = {
        "bootstrap_servers": args.bootstrap_servers,
        "input_topic": args.input_topic,
        "output_topic": args.output_topic,
        "dead_letter_topic": args.dead_letter_topic,
        "group_id": args.group,
        "revision": args.revision,
    }
    try:
        server = ServerSettings(**{k: v for k, v in server_flags.items() if v is not None})
        stream = StreamSettings(**{k: v for k, v in stream_flags.items() if v is not None})
    except ValidationError as exc:
        print(f"modeldeploy stream: {exc}", file=sys.stderr)
        return 2
    from modeldeploy_serving.stream.main import main as stream_main

    return stream_main(server, stream)


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
            golden_data=args.golden_data,
            golden_tolerance=args.golden_tolerance,
            export_onnx=not args.no_onnx,
        )
    except (PackError, TableError, OSError, ValueError) as exc:
        print(f"modeldeploy pack: {exc}", file=sys.stderr)
        return 2
    parity = (
        f", ONNX parity max |diff| {result.parity_max_abs_diff:.2e} on {result.parity_rows} rows"
        if result.parity_max_abs_diff is not None
        else ""
    )
    golden = (
        f", golden set of {result.golden_rows} rows{' with labels' if result.golden_labelled else ''}"
        if result.golden_rows
        else ""
    )
    print(f"packed {result.out} (manifest sha256 {result.digest}{parity}{golden})")
    choice = result.choice
    if choice is not None:
        print(f"runtime: {choice.runtime} ({choice.reason})")
        if choice.runtime == "xgboost" and not args.no_onnx:
            # The bundle is good, only slower per call: say so where scripts and people look for trouble.
            print(
                f"modeldeploy pack: note: packed for the xgboost runtime, {choice.reason}; "
                "give --onnx FILE with your own export for the faster onnxruntime, "
                "or --no-onnx to ask for xgboost only",
                file=sys.stderr,
            )
    return 0


def _preflight(args: argparse.Namespace) -> int:
    from modeldeploy_serving.replay import PreflightError, run_preflight

    try:
        report = run_preflight(
            bundle=args.bundle,
            bundle_sha256=args.bundle_sha256,
            url=args.url,
            stable_url=args.stable_url,
            model=args.model,
            stable_model=args.stable_model,
            thresholds_file=args.thresholds,
            timeout=args.timeout,
        )
    except PreflightError as exc:
        print(f"modeldeploy preflight: {exc}", file=sys.stderr)
        return 2
    print(report.model_dump_json(indent=1) if args.format == "json" else report.to_text())
    return 0 if report.verdict == "Passed" else 1


def _joiner(args: argparse.Namespace) -> int:
    from modeldeploy_contract.joiner_settings import JoinerSettings
    from modeldeploy_serving.joiner.app import main as joiner_main

    overrides = {"host": args.host, "port": args.port, "database": args.database}
    return joiner_main(JoinerSettings(**{k: v for k, v in overrides.items() if v is not None}))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="modeldeploy", description=__doc__.split("\n")[0] if __doc__ else None
    )
    sub = root.add_subparsers(dest="command", required=True)
    _add_serving_commands(sub)
    _add_bundle_commands(sub)
    return root


def _add_serving_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The long-running commands: serve (REST), stream (Kafka), joiner (labels)."""
    serve = sub.add_parser("serve", help="serve a model bundle over V2/V1 REST with /metrics")
    serve.add_argument("--model-uri", help="bundle folder: path, file://, http(s)://, s3:// or gs://")
    serve.add_argument("--name", help="serve the model under this name (default: the manifest's)")
    serve.add_argument("--model-sha256", help="expected sha256 of the bundle's manifest.json")
    serve.add_argument("--host", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.set_defaults(func=_serve)

    st = sub.add_parser("stream", help="score Kafka records with a model bundle (at least once)")
    st.add_argument("--model-uri", help="bundle folder: path, file://, http(s)://, s3:// or gs://")
    st.add_argument("--name", help="serve the model under this name (default: the manifest's)")
    st.add_argument("--host", help="address of the health and /metrics server (default 0.0.0.0)")
    st.add_argument("--port", type=int, help="port of the health and /metrics server (default 8080)")
    st.add_argument("--bootstrap-servers", help="Kafka bootstrap servers, host:port[,host:port]")
    st.add_argument("--input-topic", help="topic of the records to score")
    st.add_argument("--output-topic", help="topic for the scored records")
    st.add_argument("--dead-letter-topic", help="topic for bad records (default <input-topic>.dlq)")
    st.add_argument("--group", help="consumer group id")
    st.add_argument("--revision", help="revision written into every output record")
    st.set_defaults(func=_stream)

    j = sub.add_parser("joiner", help="the label joiner: predictions and delayed labels in, statistics out")
    j.add_argument("--host", help="address to bind (default 0.0.0.0)")
    j.add_argument("--port", type=int, help="port to bind (default 8090)")
    j.add_argument("--database", help="sqlite:///PATH or a PostgreSQL DSN (default: MODELDEPLOY_JOINER_*)")
    j.set_defaults(func=_joiner)


def _add_bundle_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The commands about one bundle: pack writes it, preflight judges a server against it."""
    p = sub.add_parser("pack", help="write a model bundle with its reference profile")
    p.add_argument("--model", type=Path, required=True, help="XGBoost .ubj/.json, or an .onnx model")
    onnx = p.add_mutually_exclusive_group()
    onnx.add_argument("--onnx", type=Path, help="ONNX export of the XGBoost model (checked for parity)")
    onnx.add_argument(
        "--no-onnx",
        action="store_true",
        help="XGBoost models: pack for the xgboost runtime only (by default pack exports ONNX itself, "
        "checks it and serves it through onnxruntime, falling back to xgboost when it cannot)",
    )
    p.add_argument("--train-data", type=Path, required=True, help="CSV or Parquet, features in model order")
    p.add_argument("--validation-data", type=Path, help="CSV or Parquet held out from training")
    p.add_argument("--label", help="label column to leave out of the features")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--golden-data",
        type=Path,
        help="CSV or Parquet golden set (features by name, the --label column if known): stored with "
        "this model's outputs for `modeldeploy preflight`",
    )
    p.add_argument(
        "--golden-tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="largest |served - recorded| output that still means the packed model "
        f"(default {DEFAULT_TOLERANCE})",
    )
    p.set_defaults(func=_pack)

    pf = sub.add_parser("preflight", help="replay a bundle's golden set against live servers and judge")
    pf.add_argument("--bundle", required=True, help="bundle folder or URI (as for serve --model-uri)")
    pf.add_argument("--bundle-sha256", help="expected sha256 of the bundle's manifest.json")
    pf.add_argument("--url", required=True, help="base URL of the new revision's model server")
    pf.add_argument("--stable-url", help="base URL of the stable revision's model server")
    pf.add_argument("--model", help="model name in the V2 path (default: the bundle's)")
    pf.add_argument("--stable-model", help="model name of the stable server (default: --model)")
    pf.add_argument("--thresholds", type=Path, help="JSON file of PreflightThresholds (default thresholds)")
    pf.add_argument("--format", choices=["text", "json"], default="text")
    pf.add_argument("--timeout", type=float, default=30.0, help="seconds per replay request")
    pf.set_defaults(func=_preflight)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
