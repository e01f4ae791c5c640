"""Starting and stopping the harness's own processes, safely.

Each process is recorded with its PID and its kernel start time; a PID is only ever signalled when
both still match, so a PID the kernel has reused for someone else's process is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: int  # field 22 of /proc/PID/stat, in clock ticks since boot


def start_time_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def is_alive(record: ProcessRecord) -> bool:
    return start_time_of(record.pid) == record.start_time and not _is_zombie(record.pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> ProcessRecord:
    """Start a detached process (its own session) with output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    started = start_time_of(proc.pid)
    if started is None:
        raise RuntimeError(f"{name} exited at once; see {log}")
    return ProcessRecord(name=name, pid=proc.pid, start_time=started)


def stop(record: ProcessRecord, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL after `grace` seconds; only if the record matches."""
    if not is_alive(record):
        return
    _signal_group(record, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_alive(record):
            _reap(record.pid)
            return
        time.sleep(0.05)
    _signal_group(record, signal.SIGKILL)
    while is_alive(record):
        time.sleep(0.05)
    _reap(record.pid)


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    try:
        # Daemons are session leaders: their group id is their pid. Signal the group so helpers die too.
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def save(path: Path, records: list[ProcessRecord]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two writers (the demo store, a test) never share one
    tmp.write_text(json.dumps([asdict(r) for r in records], indent=1))
    tmp.replace(path)


def load(path: Path) -> list[ProcessRecord]:
    try:
        return [ProcessRecord(**item) for item in json.loads(path.read_text())]
    except (OSError, ValueError):
        return []
