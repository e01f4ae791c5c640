"""A private PostgreSQL for tests: Debian's server binaries, a cluster in a temp dir, 127.0.0.1 only.

initdb refuses to run as root, so under root the cluster belongs to the `postgres` system user (the
Debian package creates it) and the binaries run as that user; otherwise as the current user. Tests that
use `postgres_url` are skipped, with the reason, when the binaries are missing
(hack/install-system-deps.sh installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from local_processes import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class LocalPostgres:
    def __init__(self, bin_dir: Path, root: Path, fsync: bool = False) -> None:
        self.fsync = fsync
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
            self._as_user = [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--clear-groups",
            ]

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, timeout=120, cwd=self.root, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        self.start_server()

    def start_server(self) -> None:
        """pg_ctl start of the initialised cluster (again after `stop`: same port, same data)."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        if not self.fsync:
            options += " -c fsync=off"  # tests: durability against power loss is not what they check
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The server down (immediate stop: as a crash, every connection cut) for the block, then up
        again on the same port, whatever the block raised (other tests share this server)."""
        self.stop()
        try:
            yield
        finally:
            self.start_server()

    def terminate_backends(self, database: str) -> int:
        """pg_terminate_backend of every other connection to `database`, each waited for until its
        process is gone (up to 10 s); how many there were."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()
        return int(row[0]) if row else 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[LocalPostgres]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (hack/install-system-deps.sh)"
        )
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root needs setpriv (util-linux) to run PostgreSQL as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="modeldeploy-pg-"))
    server = LocalPostgres(bin_dir, root)
    try:
        server.start()
    except (RuntimeError, KeyError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a private PostgreSQL: {exc}")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(local_postgres: LocalPostgres) -> str:
    """A fresh, empty database of the private server."""
    return local_postgres.new_database()
