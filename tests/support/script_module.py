"""A script (a file in no package: an example's make_models.py, a bench, a hack tool) imported as a
module, once per name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def script_module(name: str, path: Path) -> ModuleType:
    """The module `name` made from the file at `path`; the same one on every call. It is registered in
    sys.modules before it runs: dataclasses (and pickle-free lookups like them) find their module by name."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # a failed import leaves no half-made module behind
        raise
    return module
