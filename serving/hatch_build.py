"""Hatchling build hook: compiles the package's C extension modules (plain CPython C-API, nothing but
Python.h) with the C compiler and flags of the interpreter that builds (sysconfig), so the package needs
no build dependency besides hatchling (no setuptools, no scikit-build).

- editable installs (`uv sync` of the workspace, `make install`): the module is compiled in place, next
  to its source in src/modeldeploy_serving/, which the editable install's .pth puts on sys.path. The
  built file is ignored by git and by the images' build context (.gitignore, .dockerignore). uv reuses a
  built editable wheel, without running this hook, until one of serving/pyproject.toml's [tool.uv]
  cache-keys changes (their mtimes); the .c files and this hook are among them, so an edit recompiles
  on the next `uv sync`. A deleted module (`git clean -fdx`) changes no key: the Makefile's uv sync
  passes --reinstall-package modeldeploy-serving for that.
- wheels (`uv sync --no-editable` in serving/Dockerfile, `uv build`): compiled into a temporary folder
  and put into the wheel, which is then tagged for this interpreter and platform (cp311-cp311-linux_x86_64
  rather than py3-none-any).

A failed compile fails the build: an install without the module is an error, not a fallback.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE = "modeldeploy_serving"
# Module name (inside PACKAGE) -> its C source, relative to this folder.
EXTENSIONS = {"_predlog_lines": f"src/{PACKAGE}/_predlog_lines.c"}


def _config(name: str) -> list[str]:
    return shlex.split(str(sysconfig.get_config_var(name) or ""))


def compile_extension(source: Path, target: Path, work: Path) -> None:
    """Compile and link one module as the interpreter's own build did (CC, CFLAGS, CCSHARED, LDSHARED),
    at -O2 (after CFLAGS, so it wins over the interpreter's -O3); written under a temporary name and
    renamed, so a process that has the old module loaded keeps its mapping intact."""
    compiler = shlex.split(os.environ.get("CC", "")) or _config("CC")
    includes = {sysconfig.get_path("include"), sysconfig.get_path("platinclude")}
    obj = work / f"{target.stem}.o"
    subprocess.run(
        [
            *compiler,
            *_config("CFLAGS"),
            *_config("CCSHARED"),
            "-O2",
            *(f"-I{folder}" for folder in sorted(includes)),
            "-c",
            str(source),
            "-o",
            str(obj),
        ],
        check=True,
    )
    partial = target.with_name(f".{target.name}.partial")
    subprocess.run([*_config("LDSHARED"), str(obj), "-o", str(partial)], check=True)
    partial.replace(target)


class CExtensionsBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        work = Path(tempfile.mkdtemp(prefix="hatch-cext-"))
        self._work = work
        for module, relative in EXTENSIONS.items():
            source = Path(self.root) / relative
            filename = f"{module}{suffix}"
            started = time.monotonic()
            try:
                if version == "editable":
                    compile_extension(source, source.with_name(filename), work)
                else:
                    compile_extension(source, work / filename, work)
                    build_data["force_include"][str(work / filename)] = f"{PACKAGE}/{filename}"
            except (OSError, subprocess.CalledProcessError):
                shutil.rmtree(work, ignore_errors=True)  # finalize() does not run after a failed build
                raise
            self.app.display_info(f"compiled {PACKAGE}.{module} in {time.monotonic() - started:.2f}s")
        if version != "editable":
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
