"""Rollback inside the window: `rollback --to N` -> router table -> first answer from the warm revision.

A revision that stopped serving keeps `spec.rollout.rollbackWindow.replicas` Ready pods for
`rollbackWindow.seconds` (docs/rollouts.md, "Rollback window"). A rollback to it inside the window
should move traffic at once, with no cold start. Each round of this script:

1. waits until the ModelDeployment is settled with a revision in its window that is down to the
   window's pods (status: weight 0, `warmUntil` set, no `scaleDownAt`, a Ready pod) and the serving
   revision has all its pods Ready;
2. sends live V2 requests through the router (its pods, found from the stable Service's
   EndpointSlices: the local cluster has no kube-proxy) and watches, from the resourceVersions read
   just before the command, the ModelDeployment (status.lastCommand), the router's ConfigMap (the
   table) and the warm revision's EndpointSlices (a pod that becomes Ready after the command);
3. writes the rollback command exactly as `kubectl modeldeploy rollback --to N` does
   (`modeldeploy_contract.commands.command_patch`) and times, from the patch:
   - `applied`: status.lastCommand answers it;
   - `table`: the router ConfigMap gives the warm revision the variant's traffic and the old one none;
   - `first`: the first answer through the router from the warm revision (`x-modeldeploy-revision`);
   - `last_old`: the last answer from the revision it replaced;
   - `cold`: whether a pod that was not Ready before the command became Ready before `first` (a cold
     start: the answer could have come from a new pod). 0 cold rounds is the claim.

Rounds alternate: a rollback to the warm revision, then (the revision it replaced is now in its own
window once its scaleDownDelaySeconds is over) a rollback to that one, and so on. Going back to the
spec's revision removes the rollback pin, so the ModelDeployment must use the Immediate strategy
(with Canary the pin's removal starts a canary of the spec's revision). Times are this process's
monotonic clock at the watch events and answers: they include the API server's watch latency.

    KUBECONFIG=... .venv/bin/python bench/operator/rollback_switch.py -n demo --name churn --rounds 6

tests/e2e/test_rollback_window_e2e.py sets such a ModelDeployment up on the local cluster and runs
this script; its JSON line goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from kubernetes import client, config, watch

from modeldeploy_contract.commands import command_patch
from modeldeploy_contract.resource import GROUP, PLURAL, VERSION
from modeldeploy_contract.router_config import CONFIG_KEY, RouterConfig, config_map_name
from modeldeploy_contract.status import ModelDeploymentStatus, RevisionStatus, VariantStatus
from modeldeploy_operator.domain.names import revision_name


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _ready_addresses(discovery: client.DiscoveryV1Api, namespace: str, service: str) -> set[str]:
    found: set[str] = set()
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    for eps in slices.items:
        port = eps.ports[0].port if eps.ports else 8080
        for endpoint in eps.endpoints or []:
            if endpoint.conditions and endpoint.conditions.ready:
                found |= {f"{address}:{port}" for address in endpoint.addresses}
    return found


@dataclass
class Round:
    """What one rollback round saw; times in seconds from the command's patch."""

    source: str
    target: str
    number: int
    applied: float | None = None
    result: str | None = None
    table: float | None = None
    first: float | None = None
    last_old: float | None = None
    new_ready: float | None = None
    answers: int = 0
    failures: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def cold(self) -> bool:
        """A pod that was not Ready before the command was Ready before the first answer."""
        return self.new_ready is not None and (self.first is None or self.new_ready <= self.first)

    def complete(self) -> bool:
        return None not in (self.applied, self.table, self.first)


class Bench:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, rate: float, timeout: float) -> None:
        self.api, self.namespace, self.name, self.rate, self.timeout = api, namespace, name, rate, timeout
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)

    def get(self) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name
        )
        return body

    # --- waiting for a warm revision -----------------------------------------------------------

    def _warm(self) -> tuple[VariantStatus, RevisionStatus] | None:
        body = self.get()
        status = ModelDeploymentStatus.from_object(body)
        if status.canary_revision or status.phase != "Ready":
            return None
        for variant in status.variants:
            serving = next((r for r in variant.revisions if r.revision == variant.revision), None)
            if serving is None or serving.ready_replicas < serving.replicas or serving.replicas == 0:
                continue
            for revision in variant.revisions:
                warm = (
                    revision.weight == 0
                    and revision.warm_until is not None
                    and revision.scale_down_at is None
                    and revision.number is not None
                    and revision.ready_replicas >= 1
                    and revision.ready_replicas == revision.replicas
                )
                if warm:
                    return variant, revision
        return None

    def wait_warm(self, timeout: float) -> tuple[VariantStatus, RevisionStatus]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self._warm()
            if found is not None:
                return found
            time.sleep(0.5)
        raise SystemExit(
            f"no revision of {self.namespace}/{self.name} in its rollback window (down to the window's "
            f"pods, Ready) within {timeout:g}s; is spec.rollout.strategy Immediate and the window open?"
        )

    # --- one round -------------------------------------------------------------------------------

    def _traffic(self, seen: Round, started: list[float], stop: threading.Event, width: int) -> None:
        rng = random.Random(7)  # noqa: S311 - spreads load, not cryptography
        routers: list[str] = []
        refreshed = 0.0
        body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, width], "data": [0.0] * width}]}
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                began = time.perf_counter()
                if began - refreshed > 1.0 or not routers:
                    routers = sorted(_ready_addresses(self.discovery, self.namespace, self.name))
                    refreshed = began
                if not routers:
                    stop.wait(0.1)
                    continue
                try:
                    answer = http.post(
                        f"http://{rng.choice(routers)}/v2/models/{self.name}/infer",
                        json=body,
                        headers={"X-User-Id": f"bench-{rng.randrange(1000)}"},
                    )
                except httpx.HTTPError:
                    answer = None
                now = time.perf_counter()
                if started:  # after the command
                    at = now - started[0]
                    seen.answers += 1
                    if answer is None or answer.status_code != 200:
                        seen.failures += 1
                    else:
                        revision = answer.headers.get("x-modeldeploy-revision", "")
                        if revision == seen.target and seen.first is None:
                            seen.first = at
                        elif revision == seen.source:
                            seen.last_old = at
                stop.wait(max(0.0, 1 / self.rate - (time.perf_counter() - began)))

    def _watch_status(self, seen: Round, command_id: str, version: str, started: list[float]) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            field_selector=f"metadata.name={self.name}",
            resource_version=version,
            timeout_seconds=int(self.timeout),
        ):
            answer = ((event["object"] or {}).get("status") or {}).get("lastCommand") or {}
            if answer.get("id") == command_id and started:
                seen.applied, seen.result = time.perf_counter() - started[0], str(answer.get("result"))
                stream.stop()

    def _watch_table(self, seen: Round, version: str, started: list[float]) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self.core.list_namespaced_config_map,
            self.namespace,
            field_selector=f"metadata.name={config_map_name(self.name)}",
            resource_version=version,
            timeout_seconds=int(self.timeout),
        ):
            data = getattr(event["object"], "data", None) or {}
            if CONFIG_KEY not in data or not started:
                continue
            weights = {arm.revision: arm.weight_bp for arm in RouterConfig.from_json(data[CONFIG_KEY]).arms}
            if weights.get(seen.target, 0) > 0 and weights.get(seen.source, 0) == 0:
                seen.table = time.perf_counter() - started[0]
                stream.stop()

    def _watch_pods(
        self, seen: Round, service: str, before: set[str], version: str, started: list[float]
    ) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self.discovery.list_namespaced_endpoint_slice,
            self.namespace,
            label_selector=f"kubernetes.io/service-name={service}",
            resource_version=version,
            timeout_seconds=int(self.timeout),
        ):
            eps = event["object"]
            port = eps.ports[0].port if eps.ports else 8080
            ready = {
                f"{address}:{port}"
                for endpoint in eps.endpoints or []
                if endpoint.conditions and endpoint.conditions.ready
                for address in endpoint.addresses
            }
            if ready - before and started and seen.new_ready is None:
                seen.new_ready = time.perf_counter() - started[0]
                stream.stop()
            if seen.done.is_set():
                stream.stop()

    def one_round(self, variant: VariantStatus, warm: RevisionStatus, width: int) -> Round:
        assert variant.revision is not None
        assert warm.number is not None
        seen = Round(source=variant.revision, target=warm.revision, number=warm.number)
        service = revision_name(self.name, variant.name, warm.revision)
        before = _ready_addresses(self.discovery, self.namespace, service)
        if not before:
            raise SystemExit(f"revision {warm.revision} has no Ready endpoint in Service {service}")
        md_version = self.get()["metadata"]["resourceVersion"]
        cm_version = self.core.read_namespaced_config_map(
            config_map_name(self.name), self.namespace
        ).metadata.resource_version
        eps_version = self.discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={service}"
        ).metadata.resource_version
        command_id, patch = command_patch("rollback", revision=warm.number)
        started: list[float] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=self._traffic, args=(seen, started, stop, width), daemon=True),
            threading.Thread(
                target=self._watch_status, args=(seen, command_id, md_version, started), daemon=True
            ),
            threading.Thread(target=self._watch_table, args=(seen, cm_version, started), daemon=True),
            threading.Thread(
                target=self._watch_pods, args=(seen, service, before, eps_version, started), daemon=True
            ),
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # the traffic reaches the router and the watches are open
        started.append(time.perf_counter())
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name, patch)
        deadline = time.monotonic() + self.timeout
        while not seen.complete() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # answers already in flight to the old revision
        stop.set()
        seen.done.set()
        threads[0].join(timeout=10)
        return seen

    def width(self) -> int:
        routers = sorted(_ready_addresses(self.discovery, self.namespace, self.name))
        if not routers:
            raise SystemExit(f"no Ready router pod behind Service {self.name}")
        answer = httpx.get(f"http://{routers[0]}/v2/models/{self.name}", timeout=10)
        answer.raise_for_status()
        return int(answer.json()["inputs"][0]["shape"][-1])


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--name", required=True, help="a ModelDeployment with the Immediate strategy")
    parser.add_argument("--rounds", type=int, default=4, help="rollbacks to time (default 4)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per round (default 60 s)")
    parser.add_argument(
        "--settle", type=float, default=300.0, help="longest wait for a warm revision (default 300 s)"
    )
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.rate <= 0 or args.timeout <= 0:
        parser.error("--rounds must be >= 1, --rate and --timeout > 0")

    bench = Bench(
        config.new_client_from_config(config_file=args.kubeconfig),
        args.namespace,
        args.name,
        args.rate,
        args.timeout,
    )
    strategy = ((bench.get().get("spec") or {}).get("rollout") or {}).get("strategy", "Immediate")
    if strategy != "Immediate":
        parser.error(f"spec.rollout.strategy is {strategy}: rounds alternate, which needs Immediate")
    width = bench.width()
    rounds: list[Round] = []
    for index in range(args.rounds):
        variant, warm = bench.wait_warm(args.settle)
        seen = bench.one_round(variant, warm, width)
        rounds.append(seen)
        print(
            f"{index + 1:3d}  rollback --to {seen.number} ({seen.target}): applied {_ms(seen.applied)} ms, "
            f"table {_ms(seen.table)} ms, first answer {_ms(seen.first)} ms, "
            f"last old {_ms(seen.last_old)} ms, "
            f"new pod Ready {_ms(seen.new_ready)} ms, cold={seen.cold}, answers {seen.answers}, "
            f"failed {seen.failures}",
            file=sys.stderr,
        )
    done = [r for r in rounds if r.complete()]

    def stats(key: str) -> dict[str, float | None]:
        values = [getattr(r, key) for r in done if getattr(r, key) is not None]
        if not values:
            return {"p50_ms": None, "max_ms": None}
        return {"p50_ms": _ms(_percentile(values, 0.5)), "max_ms": _ms(max(values))}

    summary = {
        "benchmark": "rollback_switch",
        "rounds": len(rounds),
        "complete": len(done),
        "cold": sum(r.cold for r in rounds),
        "applied": stats("applied"),
        "table": stats("table"),
        "first_answer": stats("first"),
        "last_old_answer": stats("last_old"),
        "mean_first_ms": _ms(statistics.fmean([r.first for r in done if r.first is not None]))
        if done
        else None,
        "failed_answers": sum(r.failures for r in rounds),
        "answers": sum(r.answers for r in rounds),
        "results": sorted({r.result or "unanswered" for r in rounds}),
    }
    first = stats("first")
    print(
        f"rollback inside the window over {len(done)}/{len(rounds)} rounds: first answer from the warm "
        f"revision p50 {first['p50_ms']} ms, max {first['max_ms']} ms; cold starts {summary['cold']}"
    )
    print(json.dumps(summary))
    return 0 if len(done) == len(rounds) and summary["cold"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
