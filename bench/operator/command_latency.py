"""Manual-command latency: annotate -> status.lastCommand answered, as `kubectl modeldeploy` sees it.

Writes the modeldeploy.io/command annotation N times (exactly as the plugin does: a merge patch built
by modeldeploy_contract.commands.command_patch) and times each one until the operator's answer for
that command id shows in status.lastCommand, observed on a watch opened at the patch's own
resourceVersion (so no event is missed and no polling interval is added). Prints p50/p90/p99/max and
one JSON line for docs/benchmarks.md.

The default action, `resume`, is harmless on a ModelDeployment with nothing paused: the operator
answers `Ignored` and changes nothing else (its answer is still one reconcile and one status write,
which is what is measured). Any existing ModelDeployment will do, e.g. the churn example:

    KUBECONFIG=... .venv/bin/python bench/operator/command_latency.py -n demo --name churn -N 50

Needs a running operator (in-cluster or local) and `patch` on modeldeployments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from kubernetes import client, config, watch

from modeldeploy_contract.commands import command_patch
from modeldeploy_contract.resource import GROUP, PLURAL, VERSION
from modeldeploy_contract.status import CommandAction


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def one_command(
    api: client.CustomObjectsApi, namespace: str, name: str, action: CommandAction, timeout: float
) -> tuple[float, str]:
    """Seconds from sending one command to seeing it answered, and the operator's result."""
    command_id, patch = command_patch(action)
    started = time.perf_counter()
    patched: dict[str, Any] = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, patch
    )
    answer = (patched.get("status") or {}).get("lastCommand") or {}
    if answer.get("id") == command_id:  # answered before the patch returned (cannot be, but be exact)
        return time.perf_counter() - started, str(answer.get("result"))
    stream = watch.Watch().stream(
        api.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        field_selector=f"metadata.name={name}",
        resource_version=patched["metadata"]["resourceVersion"],
        timeout_seconds=max(1, int(timeout)),
    )
    for event in stream:
        answer = ((event["object"] or {}).get("status") or {}).get("lastCommand") or {}
        if answer.get("id") == command_id:
            elapsed = time.perf_counter() - started
            return elapsed, str(answer.get("result"))
    raise TimeoutError(f"command {command_id} ({action}) not answered within {timeout:g}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--name", required=True, help="an existing ModelDeployment")
    parser.add_argument("-N", "--count", type=int, default=20, help="commands to send (default 20)")
    parser.add_argument(
        "--action", choices=["resume", "pause"], default="resume", help="resume (default) or pause"
    )
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between commands (default 0.5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per command (default 30s)")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    args = parser.parse_args(argv)
    if args.count < 1 or args.gap < 0 or args.timeout <= 0:
        parser.error("--count must be >= 1, --gap >= 0 and --timeout > 0")

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=args.kubeconfig))
    api.get_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, args.name)  # fail fast
    latencies: list[float] = []
    results: dict[str, int] = {}
    for index in range(args.count):
        seconds, result = one_command(api, args.namespace, args.name, args.action, args.timeout)
        latencies.append(seconds)
        results[result] = results.get(result, 0) + 1
        print(f"{index + 1:4d}  {seconds * 1000:8.1f} ms  {result}", file=sys.stderr)
        time.sleep(args.gap)
    summary = {
        "benchmark": "command_latency",
        "action": args.action,
        "count": len(latencies),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 1),
        "p90_ms": round(_percentile(latencies, 0.90) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "results": results,
    }
    print(
        f"annotate -> status.lastCommand over {summary['count']} {args.action} commands: "
        f"p50 {summary['p50_ms']} ms, p90 {summary['p90_ms']} ms, p99 {summary['p99_ms']} ms, "
        f"max {summary['max_ms']} ms"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
