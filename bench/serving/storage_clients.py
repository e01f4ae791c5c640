"""What each cloud storage client library costs the serving image: installed size over the serving
package's own dependencies, and the import time a model server pays on its first remote load.

Candidates (docs/benchmarks.md, "Cloud storage clients"):
- gs: google-auth[requests] (token only; the download is the server's httpx GET) or google-cloud-storage;
- Azure Blob: azure-identity (token only) or azure-storage-blob + azure-identity.

One venv per candidate set, each with the serving package and its dependencies except the
candidates (uv, hard links from uv's cache). Size: `du` of site-packages (without bytecode) minus the
serving-only venv's. Import cost: the median and the minimum over --runs fresh interpreters of the
CPU time (user + system) of `python -c "import ..."` minus the median (minimum) of
`python -c "import httpx"` (the server has httpx loaded already), after one warm-up run that writes
the bytecode. CPU time, not wall time: on the shared 2-core machine the wall time of one import
ranged over seconds with the load.

    .venv/bin/python bench/serving/storage_clients.py --out /tmp/storage-clients
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# With bytecode, as in the image (compiled at build time): PYTHONDONTWRITEBYTECODE=1, set by some shells,
# would make every run compile its imports from source.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
SETS: dict[str, tuple[list[str], str]] = {
    "serving only": ([], "import httpx"),
    "google-auth[requests]": (
        ["google-auth[requests]"],
        "import httpx, google.auth, google.auth.transport.requests, google.auth.compute_engine, "
        "google.oauth2.service_account, google.auth.identity_pool",
    ),
    "google-cloud-storage": (["google-cloud-storage"], "import httpx; from google.cloud import storage"),
    "azure-identity": (["azure-identity"], "import httpx; from azure.identity import DefaultAzureCredential"),
    "azure-storage-blob + azure-identity": (
        ["azure-storage-blob", "azure-identity"],
        "import httpx; from azure.identity import DefaultAzureCredential; "
        "from azure.storage.blob import BlobClient",
    ),
    "chosen: google-auth[requests] + azure-identity": (
        ["google-auth[requests]", "azure-identity"],
        "import httpx, google.auth, google.auth.transport.requests, google.auth.compute_engine, "
        "google.oauth2.service_account, google.auth.identity_pool; "
        "from azure.identity import DefaultAzureCredential",
    ),
    "SDKs: google-cloud-storage + azure-storage-blob + azure-identity": (
        ["google-cloud-storage", "azure-storage-blob", "azure-identity"],
        "import httpx; from google.cloud import storage; from azure.identity import DefaultAzureCredential; "
        "from azure.storage.blob import BlobClient",
    ),
}


def du_kib(path: Path) -> int:
    """Installed size without bytecode (the image compiles all of it at build time: its real change is
    the image's, docs/benchmarks.md; here bytecode exists only for what the timing runs imported)."""
    done = subprocess.run(
        ["du", "-sk", "--exclude=__pycache__", str(path)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[0])


def cpu(python: Path, code: str) -> float:
    """CPU seconds (user + system) of one fresh `python -c code`: on a shared, loaded machine the
    wall time of an import mostly measures the other processes; its CPU time hardly moves."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(python), "-c", code], check=True, env=ENV)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the venvs (reused when present)")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    # The serving package without its own google-auth / azure-identity: those are the candidates.
    deps = tomllib.loads((REPO / "serving/pyproject.toml").read_text())["project"]["dependencies"]
    base_deps = [d for d in deps if not d.startswith(("google-auth", "azure-", "modeldeploy-"))]
    results = {}
    for index, (name, (packages, code)) in enumerate(SETS.items()):
        venv = args.out / f"set{index}"
        python = venv / "bin/python"
        if not python.exists():
            subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
            env = {**os.environ, "VIRTUAL_ENV": str(venv)}
            subprocess.run(
                [uv, "pip", "install", "-q", str(REPO / "contract"), *base_deps], check=True, env=env
            )
            subprocess.run(
                [uv, "pip", "install", "-q", "--no-deps", str(REPO / "serving")], check=True, env=env
            )
            if packages:
                subprocess.run([uv, "pip", "install", "-q", *packages], check=True, env=env)
        site = next((venv / "lib").glob("python*/site-packages"))
        cpu(python, code)  # writes the bytecode: every later run is a warm-disk, fresh-process import
        times = [cpu(python, code) for _ in range(args.runs)]
        base = [cpu(python, "import httpx") for _ in range(args.runs)]
        results[name] = {
            "site_packages_kib": du_kib(site),
            "import_s_median": round(statistics.median(times) - statistics.median(base), 3),
            "import_s_min": round(min(times) - min(base), 3),
            "load_average": os.getloadavg()[0],
        }
    base_kib = results["serving only"]["site_packages_kib"]
    for name, r in results.items():
        r["added_mib"] = round((r["site_packages_kib"] - base_kib) / 1024, 1)
        print(
            f"{name:66s} +{r['added_mib']:5.1f} MiB  import +{r['import_s_median']:.3f} s CPU"
            f" (min +{r['import_s_min']:.3f} s, load {r['load_average']:.1f})"
        )
    (args.out / "result.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
