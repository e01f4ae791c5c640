"""The model stores the examples' READMEs have a user set up, on the pod network's host address: an
S3-compatible store (moto's server, bucket `models`, uploaded with boto3 as `aws s3 cp --recursive`
would) and a static HTTP server (`python -m http.server`), both serving one folder of bundles. Used by
the tests that apply examples/ (tests/e2e/test_examples_e2e.py, tests/e2e/test_install_walk_e2e.py)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster_helpers import wait_for
from example_manifests import BUCKET

STORE_KEYS = {"AWS_ACCESS_KEY_ID": "modeldeploy-examples", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret"}
"""The keys of the S3-compatible store, as the Secret `model-store` carries them."""


@dataclass(frozen=True)
class Stores:
    s3_endpoint: str
    """http://host:port of the S3-compatible store"""
    http_store: str
    """http://host:port of the static HTTP server"""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _answers(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


def bundles(root: Path) -> Iterator[Path]:
    """The bundle folders under `root` (a manifest.json beside the model), not the data."""
    for manifest in sorted(root.rglob("manifest.json")):
        yield manifest.parent


def copy_churn_bundles(churn_bundles: Path, root: Path) -> None:
    """The churn bundles laid out as the examples' URIs name them: `<root>/churn/v1..v3`."""
    for bundle in bundles(churn_bundles):
        shutil.copytree(bundle, root / "churn" / bundle.name)


def _upload(endpoint: str, root: Path) -> None:
    """`aws s3 cp --recursive` of every bundle folder to s3://models/<its path under root>."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=STORE_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=STORE_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=BUCKET)
    for bundle in bundles(root):
        for file in sorted(bundle.iterdir()):
            s3.upload_file(str(file), BUCKET, str(file.relative_to(root)))


@contextlib.contextmanager
def example_stores(host: str, root: Path) -> Iterator[Stores]:
    """Both stores on `host` (the pod network's host address), holding every bundle under `root`;
    stopped on the way out."""
    from moto.server import ThreadedMotoServer

    moto_port = _free_port(host)
    moto = ThreadedMotoServer(ip_address=host, port=moto_port, verbose=False)
    moto.start()
    http_port = _free_port(host)
    http_store = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(http_port), "--bind", host, "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        s3_endpoint = f"http://{host}:{moto_port}"
        _upload(s3_endpoint, root)
        wait_for("the HTTP store", lambda: _answers(host, http_port), timeout=10)
        yield Stores(s3_endpoint, f"http://{host}:{http_port}")
    finally:
        http_store.terminate()
        http_store.wait()
        moto.stop()
