"""Helpers of the cloud-identity storage tests: a hermetic environment, a tiny bundle, the fetch in a
fresh interpreter, and small HTTP(S) servers on 127.0.0.1 standing in for token endpoints.

Every fetch runs in its own `python` process with an environment built here, never the test's: the
credential libraries read their variables at import time (google-auth reads GCE_METADATA_HOST when
imported) and cache what they found, and a pod starts from a clean process too. That environment
sends every request not addressed to 127.0.0.1 to a closed local port (HTTP(S)_PROXY, NO_PROXY), so
a library that would look for a cloud's metadata server or token service fails at once instead of
reaching the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from local_processes import free_port

FETCH = """
import sys
from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage import fetch_bundle
try:
    print(fetch_bundle(sys.argv[1], ServerSettings()))
except BundleError as exc:
    print(f"BundleError: {exc}")
    sys.exit(3)
"""


def hermetic_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A pod-like environment with no cloud credential of any kind, plus `extra`."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "MODELDEPLOY_SERVER_MODEL_CACHE_DIR": str(tmp / "model-cache"),
        "MODELDEPLOY_SERVER_DOWNLOAD_TIMEOUT_SECONDS": "30",
        **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), dead),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        # AWS: no instance metadata, no shared files.
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_REGION": "us-east-1",
        # Google: no gcloud files; the metadata server on a closed local port, and not probed at all
        # unless a test removes NO_GCE_CHECK.
        "CLOUDSDK_CONFIG": str(tmp / "no-gcloud"),
        "GCE_METADATA_HOST": dead.removeprefix("http://"),
        "GCE_METADATA_IP": dead.removeprefix("http://"),
        "NO_GCE_CHECK": "true",
        # Azure: the managed-identity endpoint (IMDS) on a closed local port.
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": dead,
    }
    env.update(extra)
    return env


@dataclass
class Fetched:
    returncode: int
    stdout: str
    stderr: str

    @property
    def folder(self) -> Path:
        assert self.returncode == 0, f"fetch failed ({self.returncode}): {self.stdout}{self.stderr[-3000:]}"
        return Path(self.stdout.strip().splitlines()[-1])

    @property
    def error(self) -> str:
        assert self.returncode == 3, f"expected a BundleError ({self.returncode}): {self.stdout}{self.stderr}"
        return self.stdout.strip().splitlines()[-1]


def fetch(uri: str, env: dict[str, str]) -> Fetched:
    """fetch_bundle(uri) in a fresh interpreter with exactly `env`."""
    done = subprocess.run(
        [sys.executable, "-c", FETCH, uri], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    return Fetched(done.returncode, done.stdout, done.stderr)


def tiny_bundle(folder: Path) -> dict[str, bytes]:
    """A bundle that fetch_bundle verifies (manifest, digests, sizes) but nothing could serve: the
    model bytes are not a model. Returns name -> bytes of its three files."""
    files = {"model.onnx": os.urandom(3000), "reference_profile.json": b'{"features": {}}'}
    entry = {
        n: {"path": n, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in files.items()
    }
    manifest = {
        "schema_version": 1,
        "name": "tiny",
        "version": "v1",
        "format": "onnx",
        "task": "regression",
        "inputs": [{"name": "x"}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
        "files": {"model": entry["model.onnx"], "reference_profile": entry["reference_profile.json"]},
    }
    files["manifest.json"] = json.dumps(manifest).encode()
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def assert_same_bundle(fetched: Path, files: dict[str, bytes]) -> None:
    assert {p.name: p.read_bytes() for p in fetched.iterdir()} == files


@dataclass
class Seen:
    """One request a stub answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Seen], tuple[int, dict[str, str], bytes]]


@dataclass
class Stub:
    """An HTTP(S) server on 127.0.0.1 whose answers come from `handler`; `seen` records every request."""

    handler: Handler
    tls: tuple[Path, Path] | None = None  # (certificate, key)
    seen: list[Seen] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class RequestHandler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                outer.seen.append(seen)
                try:
                    status, headers, body = outer.handler(seen)
                except Exception as exc:  # a failed check in a handler: answered 500, kept for the test
                    outer.errors.append(exc)
                    status, headers, body = 500, {}, repr(exc).encode()
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), RequestHandler)
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def stub(handler: Handler, tls: tuple[Path, Path] | None = None) -> Iterator[Stub]:
    server = Stub(handler, tls)
    try:
        yield server
    finally:
        server.close()
    assert not server.errors, server.errors


def json_answer(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()
