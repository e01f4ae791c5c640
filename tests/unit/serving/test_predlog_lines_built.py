"""The C extension module modeldeploy_serving._predlog_lines is built wherever the package is installed
(serving/hatch_build.py: in place for the editable install of `make install`, into the wheel for the
images): an install that silently skipped the compile fails here, not at the first request."""

from __future__ import annotations

import importlib
import importlib.machinery
import sysconfig
from pathlib import Path


def test_the_extension_module_is_built_and_imports() -> None:
    module = importlib.import_module("modeldeploy_serving._predlog_lines")
    assert isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader)
    built = Path(module.__file__ or "")
    assert built.name == f"_predlog_lines{sysconfig.get_config_var('EXT_SUFFIX')}"
    package = importlib.import_module("modeldeploy_serving")
    assert built.parent == Path(package.__file__ or "").parent
    assert callable(module.one_row_lines)


def test_an_editable_install_compiled_the_current_source() -> None:
    """In place next to its source (editable install): not older than the .c, so an edited source was
    recompiled (uv reuses a built editable install unless a cache key changes) and not a stale build."""
    module = importlib.import_module("modeldeploy_serving._predlog_lines")
    built = Path(module.__file__ or "")
    source = built.with_name("_predlog_lines.c")
    if not source.exists():  # installed from a wheel: no source to compare with
        return
    assert built.stat().st_mtime >= source.stat().st_mtime, (
        f"{built.name} is older than {source.name}: run `make install` (uv sync) to recompile it"
    )
