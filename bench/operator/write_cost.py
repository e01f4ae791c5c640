"""What one write costs the API server, by kind of write (issue 16: the model change's tail).

    .venv/bin/python bench/operator/write_cost.py --rounds 6 --per-block 40 --json F

On a private control plane (etcd and kube-apiserver only: the controller-manager, scheduler and
kwok are stopped once it is up, so nothing reacts to the writes and the API server's CPU is the
writes' own), with this checkout's CRD and Argo Rollouts' installed and no controller running, the
script sends blocks of one kind of write, interleaved round by round, and reports for each kind:
the client's latency (median, p90) and the API server's and etcd's CPU per write (utime+stime of
their processes over the block, divided by its writes).

The kinds are the writes of one model change on each side of scale.py:
- `md-patch`: the bench's merge patch of a ModelDeployment's spec.model (our CRD, its CEL rules);
- `rollout-patch`: the bench's merge patch of a Rollout's spec.template (Argo's CRD);
- `md-status`: a merge patch of a ModelDeployment's /status, like the operator's status write;
- `deploy-apply-new`: server-side apply (force) creating a serving Deployment as the operator
  builds it (domain/manifests.build_serving_deployment), a new name each time;
- `deploy-post-new`: the same Deployment created with POST;
- `deploy-apply-same`: server-side apply of an existing Deployment, unchanged (a no-op write);
- `rs-post-new`: POST of a ReplicaSet like the one Argo's controller creates for a new revision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import (
    ARGO_ROLLOUTS_VERSION,
    ArgoSide,
    ModelDeploySide,
    apply_crds,
    cache_dir,
    nodes,
    private_control_plane,
)

from modeldeploy_operator.domain.manifests import build_serving_deployment
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.k8s.api import KubeApi

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "write-cost"
IMAGE = "ghcr.io/modeldeploy/serving:0.1.0"


def serving_deployment(name: str, version: int) -> dict[str, Any]:
    """The operator's serving Deployment for the scale bench's spec (replicas 0: no pods)."""
    body = ModelDeploySide("modeldeploy", NAMESPACE, None, None, None).body(0, version)
    spec = ModelDeploymentSpec.model_validate(body["spec"])
    variant = resolve_variants("m0000", spec)[0]
    owner = ModelDeploymentRef(namespace=NAMESPACE, name="m0000", uid="00000000-0000-0000-0000-000000000000")
    deployment = build_serving_deployment(owner, variant, image=IMAGE, replicas=0)
    deployment["metadata"]["name"] = name
    deployment["metadata"].pop("ownerReferences", None)  # the owner does not exist here
    return deployment


def argo_replica_set(name: str, version: int) -> dict[str, Any]:
    """A ReplicaSet as Argo's controller writes it for a new revision of scale.py's Rollout (its pod
    template, the controller's hash label and annotations; owner fields left out)."""
    template = ArgoSide("argo", NAMESPACE, None, None, None).template(0, version)
    labels = {**template["metadata"]["labels"], "rollouts-pod-template-hash": name[-10:]}
    template["metadata"]["labels"] = labels
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "rollout.argoproj.io/revision": str(version),
                "rollout.argoproj.io/desired-replicas": "1",
            },
        },
        "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": template},
    }


def rollout(version: int) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "m0000"},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "m0000"}},
            "template": ArgoSide("argo", NAMESPACE, None, None, None).template(0, version),
            "strategy": {
                "canary": {
                    "canaryService": "m0000-canary",
                    "stableService": "m0000",
                    "scaleDownDelaySeconds": 0,
                    "steps": [{"setWeight": 20}, {"pause": {"duration": "10s"}}, {"setWeight": 50}],
                }
            },
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-block", type=int, default=40)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--crd",
        type=Path,
        default=REPO / "crds" / "modeldeploy.io_modeldeployments.yaml",
        help="the ModelDeployment CRD to install (e.g. a copy without its CEL rules, to size them)",
    )
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="write-cost-") as tmp, private_control_plane(Path(tmp)) as layout:
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            layout.processes[name].stop()
        api = nodes.admin_api(layout)
        apply_crds(
            api,
            [
                args.crd,
                *sorted((cache_dir() / "argo-rollouts-crds" / ARGO_ROLLOUTS_VERSION).glob("*.yaml")),
            ],
        )
        core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        side = ModelDeploySide("modeldeploy", NAMESPACE, api, None, None)
        md = ("modeldeploy.io", "v1alpha1", NAMESPACE, "modeldeployments")
        ro = ("argoproj.io", "v1alpha1", NAMESPACE, "rollouts")
        for attempt in range(60):  # the CRDs' REST endpoints come up just after Established
            try:
                custom.create_namespaced_custom_object(*md, side.body(0, 1))
                break
            except client.ApiException:
                if attempt == 59:
                    raise
                time.sleep(1)
        custom.create_namespaced_custom_object(*ro, rollout(1))
        apps.create_namespaced_deployment(NAMESPACE, serving_deployment("same", 1))
        counter = iter(range(1, 10**9))

        # The operator's own client: the same request (PATCH, apply-patch+yaml, force) it sends.
        apply = KubeApi(api, "modeldeploy-operator", fenced=False).apply

        same = serving_deployment("same", 1)
        kinds: dict[str, Callable[[], object]] = {
            "md-patch": lambda: custom.patch_namespaced_custom_object(
                *md, "m0000", {"spec": {"model": side.model(0, next(counter))}}
            ),
            "rollout-patch": lambda: custom.patch_namespaced_custom_object(
                *ro, "m0000", {"spec": {"template": rollout(next(counter))["spec"]["template"]}}
            ),
            "md-status": lambda: custom.patch_namespaced_custom_object_status(
                *md, "m0000", {"status": {"observedGeneration": next(counter)}}
            ),
            "deploy-apply-new": lambda: apply(serving_deployment(f"apply-{next(counter)}", 1)),
            "deploy-post-new": lambda: apps.create_namespaced_deployment(
                NAMESPACE, serving_deployment(f"post-{next(counter)}", 1), _preload_content=False
            ),
            "deploy-apply-same": lambda: apply(same),
            "rs-post-new": lambda: apps.create_namespaced_replica_set(
                NAMESPACE, argo_replica_set(f"rs-{next(counter):010d}", 1), _preload_content=False
            ),
        }
        apiserver, etcd = layout.processes["kube-apiserver"], layout.processes["etcd"]
        for fn in kinds.values():  # warm every path once
            fn()
        found: dict[str, dict[str, list[float]]] = {
            k: {"latency": [], "apiserver": [], "etcd": []} for k in kinds
        }
        for r in range(args.rounds):
            order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
            for kind in order:
                fn = kinds[kind]
                a0, e0 = apiserver.cpu_seconds(), etcd.cpu_seconds()
                for _ in range(args.per_block):
                    t0 = time.perf_counter()
                    fn()
                    found[kind]["latency"].append(time.perf_counter() - t0)
                time.sleep(0.2)  # the API server's watch fan-out of the block's last writes
                found[kind]["apiserver"].append((apiserver.cpu_seconds() - a0) / args.per_block)
                found[kind]["etcd"].append((etcd.cpu_seconds() - e0) / args.per_block)
    result: dict[str, Any] = {
        "benchmark": "api_write_cost",
        "command": "bench/operator/write_cost.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_seconds": round(time.time() - started),
        "rounds": args.rounds,
        "per_block": args.per_block,
        "crd": str(
            args.crd.resolve().relative_to(REPO) if args.crd.resolve().is_relative_to(REPO) else args.crd
        ),
        "kinds": {},
    }
    print(
        f"{'write':20} {'latency p50 ms':>15} {'p90 ms':>8}   apiserver CPU ms/write (median, range)  etcd ms"
    )
    for kind, values in found.items():
        lat = sorted(values["latency"])
        row: dict[str, Any] = {
            "latency_p50_ms": round(1000 * statistics.median(lat), 2),
            "latency_p90_ms": round(1000 * lat[int(0.9 * len(lat))], 2),
            "apiserver_cpu_ms": [round(1000 * v, 2) for v in values["apiserver"]],
            "etcd_cpu_ms": [round(1000 * v, 2) for v in values["etcd"]],
        }
        result["kinds"][kind] = row
        api_ms = row["apiserver_cpu_ms"]
        print(
            f"{kind:20} {row['latency_p50_ms']:15.2f} {row['latency_p90_ms']:8.2f} "
            f"{statistics.median(api_ms):14.2f} ({min(api_ms):.2f}-{max(api_ms):.2f}){'':14} "
            f"{statistics.median(row['etcd_cpu_ms']):8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
