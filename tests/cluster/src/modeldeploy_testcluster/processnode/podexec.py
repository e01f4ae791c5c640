"""Runs inside the pod's own network namespace (`ip netns exec`, which also gives a private mount namespace):
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


def _mount(source_fd: int, is_dir: bool, target: str, read_only: bool) -> None:
    dst = Path(target)
    if is_dir:
        dst.mkdir(parents=True, exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.touch(exist_ok=True)
    # The source is named through an O_PATH descriptor opened before any mount, and mount(8) must not
    # canonicalise it back into a path: an earlier mount (an emptyDir at /tmp, say) may hide that path.
    source = f"/proc/{os.getpid()}/fd/{source_fd}"
    subprocess.run(["mount", "--no-canonicalize", "--bind", source, target], check=True)
    if read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    # Make this namespace's mounts private so nothing propagates back to the host.
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    sources = [(os.open(m["source"], os.O_PATH), Path(m["source"]).is_dir()) for m in spec["mounts"]]
    keep = [(os.open(path, os.O_PATH), path) for path in spec.get("keep_visible", [])]
    for mount, (fd, is_dir) in zip(spec["mounts"], sources, strict=True):
        _mount(fd, is_dir, mount["target"], mount["read_only"])
    # The program itself (this checkout and its virtualenv) must stay visible: a volume mounted over a
    # parent folder (an emptyDir at /tmp, with the checkout under /tmp) would hide it.
    for fd, path in keep:
        hidden = not os.path.exists(path) or not os.path.samestat(os.stat(path), os.fstat(fd))
        if hidden:
            _mount(fd, True, path, read_only=False)
    for fd, _ in [*sources, *keep]:
        os.close(fd)
    os.chdir(spec["working_dir"] or "/")
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


if __name__ == "__main__":
    main()
