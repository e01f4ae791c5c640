"""schemathesis against the server's own OpenAPI document: no generated request gets a 5xx.

The document describes the inference routes too (openapi.py), although the hot path serves them
without FastAPI. A bounded run (examples per operation, fixed seed); `st run` with more examples
reproduces it at length (docs/reliability.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from serving_harness import Bundles, ServerFactory

ST = Path(sys.executable).parent / "st"


def test_no_generated_request_gets_a_server_error(
    bundles: Bundles, serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve(str(bundles.v1))
    server.wait_ready()
    with server.client() as c:
        document = c.get("/openapi.json").json()
    assert "/v2/models/{name}/infer" in document["paths"]
    assert "/v1/models/{name}:predict" in document["paths"]
    result = subprocess.run(
        [
            str(ST),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "20",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert "passed" in result.stdout
