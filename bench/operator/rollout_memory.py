"""The operator's memory across rollout cycles (issue 11, the soak's growing leader RSS), without the
shared cluster:

    .venv/bin/python bench/operator/rollout_memory.py --cycles 16 --out /tmp/rollout-memory.json
    .venv/bin/python bench/operator/rollout_memory.py --cycles 16 --tracemalloc 12   # where it grows

What it does:

1. three real model servers on 127.0.0.1 (`modeldeploy serve`, the tests' cached churn bundles v1, v2
   and v3), each sent a steady trickle of rows (10 rows every 0.1 s), so their /metrics carry what a
   serving pod's do under load (request counters, latency and score histograms, drift windows);
2. a private control plane (etcd, kube-apiserver, controller-manager, scheduler and a kwok node, as
   bench/operator/scale.py --private-control-plane); one ModelDeployment on the kwok node (2 replicas,
   pods Ready through kwok; the rollout e2e tests' canary: 25% / pause / 50% / analysis with an
   error-rate and a prediction-shift check, shorter);
3. the operator of this checkout as a local process (bench/operator/operator_memprobe.py: unchanged,
   plus a probe on SIGUSR1, and its built-in analysis scrape sent to the local servers, since kwok pods
   have no process behind their addresses: canary -> v2's server for a good canary, v3's for a bad
   one; stable -> v1's);
4. cycles as the soak's (bench/cluster/soak.py): odd ones a good canary (promoted), even ones the bad
   one (the analysis aborts it, then the spec is set back to the stable); each a new revision (the
   spec's server.maxBodyBytes changes by 1 KiB);
5. after each cycle, the operator's probe: VmRSS, the entry count of each long-lived structure
   (informer caches, queue, scrape baselines, server reports, pools), where the RSS is (Python's
   small-object arenas, used and free; glibc's heaps, in use and free; threads), and with
   --tracemalloc a snapshot; at the end the tracemalloc growth from after --warmup cycles to the
   end, top lines.

Another checkout's operator (an earlier commit's, as a "before") runs under this one's bench with
PYTHONPATH set to an export of its operator/src (`operator_package` in the JSON says which ran).

Writes one JSON document (--out) and prints a line per cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))

from modeldeploy_testcluster import nodes  # noqa: E402
from modeldeploy_testcluster.private import private_control_plane  # noqa: E402

from built_cache import cached_build, churn_script  # noqa: E402
from cluster_helpers import wait_for  # noqa: E402
from local_processes import free_port, running, wait_http  # noqa: E402
from operator_fixtures import apply_crd  # noqa: E402

GROUP, VERSION, PLURAL, NAME = "modeldeploy.io", "v1alpha1", "modeldeployments", "churn"
KWOK = {"nodeSelector": {"type": "kwok"}, "tolerations": [nodes.KWOK_TOLERATION]}
CHURN_ARGS = ["--rows", "4000", "--trees", "40"]  # the analysis tests' build (analysis_harness.py)
DEFAULT_MAX_BODY = 16 * 1024 * 1024
CHECKS = [
    {"name": "errors", "type": "errorRate", "threshold": {"max": 0.05}},
    {"name": "score-shift", "type": "predictionShift", "threshold": {"max": 1.0}, "minSamples": 150},
]


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def rows(bundles: Path) -> list[list[float | None]]:
    with (bundles / "data" / "traffic_normal.csv").open() as handle:
        reader = csv.reader(handle)
        next(reader)
        return [[float(v) if v else None for v in row] for _, row in zip(range(2000), reader, strict=False)]


@contextlib.contextmanager
def model_servers(bundles: Path, work: Path) -> Iterator[dict[str, str]]:
    """version -> address of a running `modeldeploy serve` of it."""
    with contextlib.ExitStack() as stack:
        found: dict[str, str] = {}
        for version in ("1", "2", "3"):
            port = free_port()
            env = {
                "MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS": "50",
                "MODELDEPLOY_SERVER_DRIFT_WINDOW_SECONDS": "5",
                "MODELDEPLOY_SERVER_MODEL_CACHE_DIR": str(work / f"cache-{port}"),
            }
            args = [str(Path(sys.executable).parent / "modeldeploy"), "serve"]
            args += ["--model-uri", str(bundles / f"v{version}"), "--host", "127.0.0.1", "--port", str(port)]
            stack.enter_context(running(args, work / f"server-v{version}.log", env))
            found[version] = f"127.0.0.1:{port}"
        for address in found.values():
            wait_http(f"http://{address}/v2/health/ready", timeout=600)  # (a loaded machine: 30 s each)
        yield found


def trickle(addresses: list[str], data: list[list[float | None]], stop: threading.Event) -> None:
    """10 rows every 0.1 s to each server, until `stop`."""
    with httpx.Client(timeout=10) as http:
        i = 0
        while not stop.wait(0.1):
            batch = [data[(i + k) % len(data)] for k in range(10)]
            i += 10
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [10, 14], "data": batch}]}
            for address in addresses:
                with contextlib.suppress(httpx.HTTPError):
                    http.post(f"http://{address}/v2/models/churn/infer", json=body)


def md_body(max_body: int, version: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            # Never fetched: the pods are on the kwok node and never run.
            "model": model(version),
            "replicas": 2,
            "server": {"maxBodyBytes": max_body},
            "rollout": {
                "strategy": "Canary",
                "steps": [
                    {"setWeight": 25},
                    {"pause": {"duration": "3s"}},
                    {"setWeight": 50},
                    {"analysis": {"duration": "9s"}},
                ],
                "analysis": {"interval": "3s", "minSamples": 20, "failureLimit": 0, "checks": CHECKS},
                "progressDeadlineSeconds": 300,
                "scaleDownDelaySeconds": 0,
            },
            "drift": {"windowRows": 50, "windowSeconds": 5},
            "pods": {"serving": KWOK, "router": KWOK},
        },
    }


def model(version: str) -> dict[str, Any]:
    return {"uri": f"http://10.250.0.1:9/models/churn/v{version}", "format": "onnx", "version": version}


class Run:
    def __init__(self, api: client.ApiClient, namespace: str, canary_file: Path, servers: dict[str, str]):
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.canary_file = canary_file
        self.servers = servers

    def status(self) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, NAME)
        return dict(body.get("status") or {})

    def patch(self, version: str, max_body: int) -> None:
        spec = {"model": model(version), "server": {"maxBodyBytes": max_body}}
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, NAME, {"spec": spec}
        )

    def settled_on(self, version: str) -> bool:
        current = self.status()
        return (
            current.get("phase") == "Ready"
            and current.get("modelVersion") == version
            and not current.get("canaryRevision")
        )

    def cycle(self, number: int, stable: tuple[str, int], timeout: float) -> tuple[tuple[str, int], str]:
        """One cycle from the stable (version, maxBodyBytes): (the stable after it, the outcome)."""
        promote = number % 2 == 1
        version = ("2" if stable[0] == "1" else "1") if promote else "3"
        self.canary_file.write_text(self.servers["2" if promote else "3"])
        max_body = DEFAULT_MAX_BODY - 1024 * number
        before = max((e.get("revision", 0) for e in self.status().get("history") or []), default=0)
        self.patch(version, max_body)

        def decided() -> str | None:
            current = self.status()
            last = max(current.get("history") or [{}], key=lambda e: e.get("revision", 0))
            if last.get("revision", 0) > before and last.get("outcome") in ("Promoted", "Aborted"):
                return str(last["outcome"])
            return None

        outcome = wait_for(f"cycle {number} decided", decided, timeout)
        settle_on = (version, max_body) if outcome == "Promoted" else stable
        if outcome != "Promoted":
            self.patch(*stable)
        wait_for(f"cycle {number} settled on v{settle_on[0]}", lambda: self.settled_on(settle_on[0]), timeout)
        return settle_on, outcome


def probe(pid: int, out: Path, number: int, timeout: float = 120.0) -> dict[str, Any]:
    os.kill(pid, signal.SIGUSR1)
    path = out / f"probe-{number}.json"
    wait_for(f"probe {number}", path.exists, timeout, interval=0.2)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def allocators(sample: dict[str, Any]) -> str:
    """Where the RSS is, in one line: Python's small-object arenas (in use), glibc's heaps (in use)."""
    py, c = sample.get("pymalloc") or {}, sample.get("glibc") or {}
    return (
        f"pymalloc {py.get('arenas')} arenas ({py.get('used_mib')} MiB used), "
        f"glibc {c.get('heap_mib')} MiB heaps ({c.get('in_use_mib')} used) + {c.get('mmapped_mib')} mmapped, "
        f"{sample.get('os_threads')} threads"
    )


def growth(first: Path, last: Path, top: int) -> list[dict[str, Any]]:
    """The lines whose allocations grew most from `first` to `last` (tracemalloc snapshots)."""
    old, new = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    old, new = old.filter_traces(keep), new.filter_traces(keep)
    found = []
    for stat in new.compare_to(old, "traceback")[:top]:
        frames = [
            f"{f.filename.split('site-packages/')[-1].split('/src/')[-1]}:{f.lineno}" for f in stat.traceback
        ]
        found.append(
            {
                "kib": round(stat.size_diff / 1024, 1),
                "blocks": stat.count_diff,
                "traceback": frames[-8:][::-1],
            }
        )
    return found


def operator_env(
    kubeconfig: Path, namespace: str, probes: Path, canary_file: Path, stable: str, frames: int
) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "MODELDEPLOY_"))},
        "KUBECONFIG": str(kubeconfig),
        "MODELDEPLOY_OPERATOR_NAMESPACES": namespace,
        # One replica, no Lease: under tracemalloc on a loaded machine its renewals ran late and it
        # stepped down (the leader runs the same code either way; a standby runs none of it).
        "MODELDEPLOY_OPERATOR_LEADER_ELECTION": "false",
        "MODELDEPLOY_OPERATOR_HEALTH_PORT": str(free_port()),
        "MODELDEPLOY_OPERATOR_METRICS_PORT": str(free_port()),
        "MEMPROBE_DIR": str(probes),
        "MEMPROBE_CANARY": str(canary_file),
        "MEMPROBE_STABLE": stable,
        "MEMPROBE_TRACEMALLOC": str(frames),
    }


def run_cycles(args: argparse.Namespace, run: Run, pid: int, probes: Path, result: dict[str, Any]) -> None:
    """The ModelDeployment created and Ready, then the cycles, a probe after each."""
    run.custom.create_namespaced_custom_object(
        GROUP, VERSION, run.namespace, PLURAL, md_body(DEFAULT_MAX_BODY, "1")
    )
    # (the operator under tracemalloc, on a loaded 2-core machine, took minutes to start)
    wait_for("Ready on v1", lambda: run.settled_on("1"), 5 * args.timeout)
    result["start"] = probe(pid, probes, 1)
    log(f"ready: {json.dumps(result['start'])}")
    stable = ("1", DEFAULT_MAX_BODY)
    for number in range(1, args.cycles + 1):
        started = time.monotonic()
        stable, outcome = run.cycle(number, stable, args.timeout)
        sample = probe(pid, probes, number + 1)
        sample.update(cycle=number, outcome=outcome, seconds=round(time.monotonic() - started, 1))
        result["cycles"].append(sample)
        log(
            f"cycle {number}: {outcome} in {sample['seconds']} s, RSS {sample['rss_mib']} MiB, "
            f"{allocators(sample)}, {json.dumps(sample['counts'])}"
        )
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
    if args.tracemalloc and args.cycles > args.warmup:
        first = probes / f"probe-{args.warmup + 1}.tracemalloc"
        last = probes / f"probe-{args.cycles + 1}.tracemalloc"
        result["tracemalloc_growth"] = {
            "from_cycle": args.warmup,
            "to_cycle": args.cycles,
            "top": growth(first, last, args.top),
            **growth_by_line(first, last, args.top),
        }


def growth_by_line(first: Path, last: Path, top: int) -> dict[str, Any]:
    """The growth from `first` to `last` in all, and by the innermost line of the operator's own code
    in each allocation's traceback (a parse's many lines of prometheus_client count as the operator
    line that called it), in KiB."""
    old, new = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    by_line: dict[str, int] = {}
    total = 0
    for stat in new.filter_traces(keep).compare_to(old.filter_traces(keep), "traceback"):
        total += stat.size_diff
        ours = [f for f in stat.traceback if "modeldeploy_operator" in f.filename]
        where = ours[-1] if ours else stat.traceback[-1]
        line = f"{where.filename.split('site-packages/')[-1].split('/src/')[-1]}:{where.lineno}"
        by_line[line] = by_line.get(line, 0) + stat.size_diff
    ranked = sorted(by_line.items(), key=lambda item: -abs(item[1]))[:top]
    return {"total_kib": round(total / 1024, 1), "by_line_kib": {k: round(v / 1024, 1) for k, v in ranked}}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=4, help="cycles before the tracemalloc baseline")
    parser.add_argument("--tracemalloc", type=int, default=0, help="frames per traceback (0: off)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds for one cycle's wait")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    import modeldeploy_operator  # (which checkout's operator this python runs: recorded)

    bundles = cached_build("churn-analysis", CHURN_ARGS, churn_script(CHURN_ARGS))
    work = Path(tempfile.mkdtemp(prefix="rollout-memory-"))
    probes = work / "probes"
    probes.mkdir()
    result: dict[str, Any] = {
        "benchmark": "rollout_memory",
        "command": " ".join([".venv/bin/python", "bench/operator/rollout_memory.py", *sys.argv[1:]]),
        "operator_package": str(Path(modeldeploy_operator.__file__).parent),
        "cycles": [],
    }
    stop = threading.Event()
    with model_servers(bundles, work) as servers, private_control_plane(work, kwok_nodes=1) as layout:
        feeder = threading.Thread(
            target=trickle, args=(list(servers.values()), rows(bundles), stop), daemon=True
        )
        feeder.start()
        api = config.new_client_from_config(config_file=str(layout.admin_kubeconfig))
        apply_crd(api)
        namespace = f"memory-{uuid.uuid4().hex[:5]}"
        client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        canary_file = work / "canary-address"
        canary_file.write_text(servers["2"])
        env = operator_env(
            layout.admin_kubeconfig, namespace, probes, canary_file, servers["1"], args.tracemalloc
        )
        argv = [sys.executable, str(REPO / "bench" / "operator" / "operator_memprobe.py")]
        with (work / "operator.log").open("wb") as out:
            operator = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            run_cycles(args, Run(api, namespace, canary_file, servers), operator.pid, probes, result)
        finally:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
            stop.set()
            feeder.join(timeout=15)
    result["work"] = str(work)
    if len(result["cycles"]) > args.warmup:
        first_rss = result["cycles"][args.warmup - 1]["rss_mib"]
        result["rss_growth_after_warmup_mib"] = round(result["cycles"][-1]["rss_mib"] - first_rss, 2)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "cycles"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
