"""Which container images the process node can run, and as what local program.

A pod's image is matched by repository (the tag is ignored). Its command's first word is looked up in
the mapped `bin_dir` first (this checkout's virtualenv), then on PATH; a pod with no command runs the
mapped `entrypoint`, as a container runtime would run the image's ENTRYPOINT.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypedDict


class ImageEntry(TypedDict):
    bin_dir: str
    entrypoint: list[str]


SERVING_IMAGE = "ghcr.io/modeldeploy/serving"
OPERATOR_IMAGE = "ghcr.io/modeldeploy/operator"
# A test-only image: a Python interpreter with this project's dependencies, for harness tests.
TEST_PYTHON_IMAGE = "modeldeploy.test/python"


def default_image_map() -> dict[str, ImageEntry]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        SERVING_IMAGE: {"bin_dir": bin_dir, "entrypoint": ["modeldeploy"]},
        OPERATOR_IMAGE: {"bin_dir": bin_dir, "entrypoint": ["modeldeploy-operator"]},
        TEST_PYTHON_IMAGE: {"bin_dir": bin_dir, "entrypoint": ["python"]},
    }


def repository_of(image: str) -> str:
    """`ghcr.io/x/y:1.0` and `ghcr.io/x/y@sha256:...` -> `ghcr.io/x/y` (a registry port is kept)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name
