"""Runs inside the pod network namespace (`ip netns exec`, which also gives a private mount namespace):
bind-mounts the pod's volumes at their mount paths, then replaces itself with the container's command.

Mount points missing on the host are created as empty folders (a mount needs one); nothing is ever
mounted over the host's own view, since the mounts live in this process's mount namespace only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _mount(source: str, target: str, read_only: bool) -> None:
    src = Path(source)
    dst = Path(target)
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.touch(exist_ok=True)
    subprocess.run(["mount", "--bind", source, target], check=True)
    if read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    # Make this namespace's mounts private so nothing propagates back to the host.
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    for mount in spec["mounts"]:
        _mount(mount["source"], mount["target"], mount["read_only"])
    os.chdir(spec["working_dir"] or "/")
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


if __name__ == "__main__":
    main()
