"""What should exist for one ModelDeployment: the objects that carry out a rollout Plan.

A pure function of (spec, plan). The planner (`domain.rollout`) decides which revisions run, with how
many replicas and which share of their variant's traffic; this module turns that into Deployments,
Services and HPAs per revision, the router's table (or the Gateway API HTTPRoute), and the stable
Service. Revisions the spec no longer describes (an old stable kept for rollbacks, a pinned one) keep
their objects untouched except for their replica count.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modeldeploy_contract.weights import arm_weight_bp

from . import labels as lbl
from .joiner import build_joiner_objects, feed_env
from .manifests import (
    build_hpa,
    build_serving_deployment,
    build_serving_pdb,
    build_serving_service,
    build_stable_service,
    build_stream_deployment,
)
from .names import revision_name, stream_name
from .network_policy import API_VERSION as NETWORK_POLICY_API_VERSION
from .network_policy import KIND as NETWORK_POLICY_KIND
from .network_policy import NetworkPolicyOptions, build_network_policies
from .resource import ModelDeploymentRef
from .revision import ResolvedVariant, resolve_variants
from .rollout.model import DesiredRevision, Plan
from .router import build_router_config, build_router_objects
from .spec import ModelDeploymentSpec, PodDisruptionBudgetSpec
from .stream import StreamPlan, plan_stream
from .traffic import Arm, build_http_route

OWNED_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("v1", "ConfigMap"),
    ("policy/v1", "PodDisruptionBudget"),
)
ROUTER_RBAC_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)
"""Owned too when the operator makes each router's ServiceAccount, Role and RoleBindings (manage_router_rbac):
they go with the router when the traffic provider changes away from it."""
NETWORK_POLICY_KINDS: tuple[tuple[str, str], ...] = ((NETWORK_POLICY_API_VERSION, NETWORK_POLICY_KIND),)
"""Always listed and pruned, whether or not the operator makes NetworkPolicies (network_policies): turning
them off removes the ones it made, and the router's goes with the router."""
_REVISION_KINDS = ("Deployment", "Service")


def _kept_kinds(revision: DesiredRevision) -> tuple[str, ...]:
    """The kinds of a revision's objects kept as they exist when the pass does not write them. A
    revision the spec no longer describes also keeps its disruption budget while it has pods: the
    stable one of a canary still carries most of the traffic, and pruning its budget at the model
    change (as before 2026-12-06; seen as one PDB delete a model change in the N = 1,000 bench's
    writes) let a node drain take all its pods at once. The spec's own revisions write theirs."""
    if revision.from_spec or revision.replicas == 0:
        return _REVISION_KINDS
    return (*_REVISION_KINDS, "PodDisruptionBudget")


# Arm order within a variant: who takes freed slots of the router's table first, and the layout of a
# first table (stickiness itself does not depend on it: the slot table is edited minimally).
_ARM_ORDER = {"canary": 0, "preview": 1, "pinned": 2, "stable": 3, "previous": 4}


@dataclass(frozen=True)
class BuildOptions:
    """What the operator's own settings contribute to the objects it builds."""

    serving_image: str
    router_image: str
    image_pull_policy: str = "IfNotPresent"
    router_cluster_role: str = "modeldeploy-router"
    router_role_kind: str = "ClusterRole"
    """Kind of router_cluster_role: a ClusterRole (cluster-wide install) or a Role in each namespace."""
    router_service_account: str | None = None
    """A ServiceAccount every router shares (namespaced installs); None: one per router, made here."""
    network_policy: NetworkPolicyOptions | None = None
    """NetworkPolicies for each ModelDeployment's servers and router (domain.network_policy); None: none."""


@dataclass(frozen=True)
class DesiredState:
    manifests: tuple[dict[str, Any], ...]
    """Objects to server-side apply, in order (`apply_waves`: which of them may be written at once)."""
    replica_patches: tuple[tuple[str, int], ...]
    """(Deployment name, replicas) for revisions the spec no longer describes: patch replicas only."""
    keep: frozenset[tuple[str, str]]
    """(kind, name) of owned objects that must survive pruning. Kinds matter: the stable Service and
    the HTTPRoute share the ModelDeployment's name."""
    arms: tuple[Arm, ...]
    """The traffic split."""
    stream_handover_pending: bool = False
    """spec.stream: the new output writer waits for the old one's pods to be gone (domain/stream.py)."""


def _arms(plan: Plan) -> list[Arm]:
    """The traffic arms of a plan. The one place where weights change unit: the plan's whole percents
    (a variant's share of all traffic, a revision's share of its variant) become basis points of all
    traffic, which the router table, the router and the HTTPRoute carry unchanged."""
    arms = []
    for variant in plan.variants:
        for revision in sorted(variant.revisions, key=lambda r: _ARM_ORDER[r.role]):
            if revision.replicas > 0 or revision.weight > 0:
                weight_bp = arm_weight_bp(variant.weight, revision.weight)
                mirror = revision.mirror_percent if weight_bp == 0 else 0
                arms.append(Arm(variant.name, revision.revision, weight_bp, mirror))
    return arms


def _uses_hpa(revision: DesiredRevision) -> bool:
    # An HPA would scale a revision kept at 0 (or a preview) back up: only traffic-taking ones get one.
    return revision.role in ("stable", "canary", "pinned") and revision.replicas > 0


def _stream_objects(
    owner: ModelDeploymentRef,
    spec: ModelDeploymentSpec,
    stream_plan: StreamPlan,
    resolved: Mapping[str, ResolvedVariant],
    options: BuildOptions,
) -> tuple[list[dict[str, Any]], set[tuple[str, str]]]:
    """The stream Deployments the plan wants (only the spec's own revision is rendered; others keep
    what exists), and the (kind, name) pairs to keep."""
    manifests: list[dict[str, Any]] = []
    keep: set[tuple[str, str]] = set()
    if spec.stream is None:
        return manifests, keep
    for stream_revision in stream_plan.revisions:
        variant = resolved[stream_revision.variant]
        name = stream_name(owner.name, variant.name, stream_revision.revision, stream_revision.role)
        keep.add(("Deployment", name))
        if stream_revision.from_spec and stream_revision.revision == variant.revision:
            manifests.append(
                build_stream_deployment(
                    owner,
                    variant,
                    spec.stream,
                    stream_revision,
                    image=options.serving_image,
                    image_pull_policy=options.image_pull_policy,
                    pod=spec.pods.serving,
                    prediction_log=spec.prediction_log,
                    feed_env=feed_env(owner.name, variant.name, stream_revision.revision)
                    if spec.joiner_enabled
                    else (),
                )
            )
    return manifests, keep


def desired_state(
    owner: ModelDeploymentRef,
    spec: ModelDeploymentSpec,
    plan: Plan,
    *,
    options: BuildOptions,
    generation: int = 0,
    previous_router_table: str | None = None,
    externally_scaled: frozenset[str] = frozenset(),
    stream_output_pods: Mapping[str, int] | None = None,
) -> DesiredState:
    """`previous_router_table`: the `router.json` now in the router's ConfigMap (None: none), whose slot
    table the new one edits minimally. `externally_scaled`: names of serving Deployments an autoscaler
    the operator did not make targets (an HPA of the user's, KEDA's): their replicas are that
    autoscaler's, so they are neither applied nor patched, and no HPA of ours competes with it (two
    HPAs on one target both stop scaling, AmbiguousSelector). `stream_output_pods`: revision -> stream
    pods in the output role that exist now (running or terminating), for the stream handover.

    `spec` is the spec with the chart's pod defaults merged in (`pods.with_pod_defaults`)."""
    budget = spec.pod_disruption_budget or PodDisruptionBudgetSpec()
    resolved = {v.name: v for v in resolve_variants(owner.name, spec)}
    manifests: list[dict[str, Any]] = []
    patches: list[tuple[str, int]] = []
    keep: set[tuple[str, str]] = set()
    versions: dict[tuple[str, str], str] = {}
    for variant_plan in plan.variants:
        variant = resolved[variant_plan.name]
        for revision in variant_plan.revisions:
            name = revision_name(owner.name, variant.name, revision.revision)
            keep |= {(kind, name) for kind in _kept_kinds(revision)}
            if revision.model_version:
                versions[(variant.name, revision.revision)] = revision.model_version
            foreign = name in externally_scaled
            if not revision.from_spec:
                if not foreign:
                    patches.append((name, revision.replicas))
                continue
            versions[(variant.name, revision.revision)] = variant.model.version
            takes_traffic = _uses_hpa(revision)
            autoscaled = takes_traffic and (variant.autoscaling is not None or foreign)
            manifests.append(
                build_serving_deployment(
                    owner,
                    variant,
                    image=options.serving_image,
                    replicas=None if autoscaled else revision.replicas,
                    progress_deadline_seconds=spec.rollout.progress_deadline_seconds,
                    image_pull_policy=options.image_pull_policy,
                    pod=spec.pods.serving,
                    prediction_log=spec.prediction_log,
                    extra_env=feed_env(owner.name, variant.name, variant.revision)
                    if spec.joiner_enabled
                    else (),
                )
            )
            manifests.append(build_serving_service(owner, variant))
            hpa = build_hpa(owner, variant) if autoscaled and not foreign else None
            if hpa is not None:
                manifests.append(hpa)
            pdb = build_serving_pdb(owner, variant, budget) if takes_traffic else None
            if pdb is not None:
                manifests.append(pdb)

    stream_plan = plan_stream(spec, plan, stream_output_pods or {})
    stream_manifests, stream_keep = _stream_objects(owner, spec, stream_plan, resolved, options)
    manifests += stream_manifests
    keep |= stream_keep

    arms = _arms(plan)
    if spec.traffic.provider == "router" and arms:
        config = build_router_config(owner, spec, arms, versions, generation, previous_router_table)
        manifests += build_router_objects(
            owner,
            config,
            image=options.router_image,
            image_pull_policy=options.image_pull_policy,
            cluster_role=options.router_cluster_role,
            role_kind=options.router_role_kind,
            shared_service_account=options.router_service_account,
            replicas=spec.traffic.router_replicas,
            pod=spec.pods.router,
            prediction_log=spec.prediction_log,
        )
        selector = lbl.router_selector(owner.name)
    else:
        selector = {lbl.DEPLOYMENT_LABEL: owner.name, "app.kubernetes.io/component": lbl.SERVER_COMPONENT}
        live = [a for a in arms if a.weight_bp > 0]
        if len(live) == 1:
            selector = lbl.revision_selector(owner.name, live[0].variant, live[0].revision)
    manifests.append(build_stable_service(owner, selector))
    manifests += build_joiner_objects(
        owner, spec, image=options.serving_image, image_pull_policy=options.image_pull_policy
    )
    if options.network_policy is not None:
        manifests += build_network_policies(
            owner,
            options.network_policy,
            behind_router=spec.traffic.provider == "router",
            joiner=spec.joiner_enabled,
        )
    if spec.traffic.provider == "gatewayAPI" and spec.traffic.gateway_api is not None and arms:
        manifests.append(build_http_route(owner, spec.traffic.gateway_api, arms))
    keep |= {(m["kind"], m["metadata"]["name"]) for m in manifests}
    return DesiredState(
        manifests=tuple(manifests),
        replica_patches=tuple(patches),
        keep=frozenset(keep),
        arms=tuple(arms),
        stream_handover_pending=stream_plan.handover_pending,
    )


BEFORE_PODS_KINDS = frozenset(
    {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "NetworkPolicy"}
)
"""What a pod needs, or must be held to, from its start: its ServiceAccount (a pod naming a missing one
is refused, and its ReplicaSet retries with backoff), the router's RBAC and table, a stream's
credentials, and the NetworkPolicies that confine it."""
WORKLOAD_KINDS = frozenset({"Deployment"})
READ_LIVE_KINDS = frozenset({"ConfigMap"})
"""What pods read live, not at their start: the router lists and watches its table (the only ConfigMap
a pass writes) and serves whatever it holds. Such an object must exist before the pods that read it,
but a change to one that exists need not come before them (`apply_waves`)."""
ROUTE_KINDS = frozenset({"HTTPRoute"})
"""Written after everything else of a pass: an HTTPRoute names the Services of its backends, and sent
with them in one wave it could exist (and be read) before a Service it names (a CI run of 2026-12-04:
the gateway test listed the Services right after the route appeared and missed the treatment's)."""


def apply_waves(
    manifests: Sequence[dict[str, Any]], existing: Collection[tuple[Any, Any]] = frozenset()
) -> tuple[tuple[dict[str, Any], ...], ...]:
    """`manifests` in the order to apply them, as waves: every object of a wave may be written at once
    (nothing in a wave needs another of it), and a wave only after the one before. First what pods need
    (BEFORE_PODS_KINDS) but the RoleBindings; then each RoleBinding alone, in the manifests' order;
    then the Deployments, and with them a change to a READ_LIVE_KINDS object that exists already
    (`existing`: the (kind, name) of the live objects); then what refers to the Deployments or their pods
    (Services, PDBs, HPAs, and any other kind); last the HTTPRoutes (ROUTE_KINDS), which name those
    Services. A read-live object that does not exist yet stays in the first wave (a router pod needs
    its table to start), and so does every one in a pass without a Deployment. Each wave keeps the
    manifests' own order (the Deployments' wave: the Deployments first); empty waves are left out.

    A new ModelDeployment's first pass (nothing exists):

    >>> kinds = ["HTTPRoute", "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "RoleBinding",
    ...          "ConfigMap"]
    >>> manifests = [{"kind": k, "metadata": {"name": "m"}} for k in kinds]
    >>> for wave in apply_waves(manifests):
    ...     print([m["kind"] for m in wave])
    ['ServiceAccount', 'Role', 'ConfigMap']
    ['RoleBinding']
    ['RoleBinding']
    ['Deployment']
    ['Service']
    ['HTTPRoute']

    A model change (everything exists; the new revision's Deployment does not, and the router table
    gains its arm): the table's change goes out with the Deployment, not a write ahead of it.
    (Unchanged objects are in the waves too; the reconciler skips their writes.)

    >>> existing = {(k, "m") for k in kinds if k != "Deployment"}
    >>> for wave in apply_waves(manifests, existing):
    ...     print([m["kind"] for m in wave])
    ['ServiceAccount', 'Role']
    ['RoleBinding']
    ['RoleBinding']
    ['Deployment', 'ConfigMap']
    ['Service']
    ['HTTPRoute']

    Why waves and not one object after another: a new ModelDeployment's first pass writes about ten
    objects, and its router Deployment came ninth, 0.2-0.5 s after the ModelDeployment's event on the
    loaded 2-core bench machine (docs/benchmarks.md, "apply -> created").
    Why the RoleBindings one at a time, after the Role: the API server judges a binding by what the
    operator may grant, which it reads from the objects already there; sent with the Role and each
    other, the router's bindings were refused (`rolebindings "m0-router" not found`) when the operator
    was restarted mid-pass (the CI run of 2026-12-04, test_operator_reconcile.py), where sent in order
    they never were.
    Why an existing table's change with the Deployments, not before them nor after them: a model
    change's pass changes the table (the new revision's arm, weight 0) and creates the new revision's
    Deployment, the one write the reaction waits for. Sent a whole write ahead of it, the table held
    the Deployment 25-41 ms of the 122-139 ms from the model change to the Deployment seen (N = 300
    and 1,000; docs/benchmarks.md, "Model change -> revision, stage by stage", 2026-12-05). Sent
    after it (the Deployment the pass's first write), the reaction measured slower than beside it:
    0.081 s p50 pooled against 0.062 s (N = 300, 2 x 20 samples a side, interleaved, quiet; Argo
    Rollouts 0.077 s; docs/benchmarks.md, "Model change -> revision: the Deployment first, measured",
    2026-12-06). The Deployments come first in their wave: its first write is sent from the
    worker's own thread (the reconciler's `_apply_wave`)."""
    has_workloads = any(m["kind"] in WORKLOAD_KINDS for m in manifests)

    def goes_with_workloads(m: dict[str, Any]) -> bool:
        key = (m["kind"], m["metadata"]["name"])
        return has_workloads and m["kind"] in READ_LIVE_KINDS and key in existing

    with_workloads = tuple(m for m in manifests if goes_with_workloads(m))
    bindings = tuple((m,) for m in manifests if m["kind"] == "RoleBinding")
    before_pods = tuple(
        m
        for m in manifests
        if m["kind"] in BEFORE_PODS_KINDS and m["kind"] != "RoleBinding" and not goes_with_workloads(m)
    )
    workloads = tuple(m for m in manifests if m["kind"] in WORKLOAD_KINDS)
    placed = BEFORE_PODS_KINDS | WORKLOAD_KINDS | ROUTE_KINDS
    rest = tuple(m for m in manifests if m["kind"] not in placed)
    routes = tuple(m for m in manifests if m["kind"] in ROUTE_KINDS)
    return tuple(
        wave for wave in (before_pods, *bindings, (*workloads, *with_workloads), rest, routes) if wave
    )


def stale_objects(state: DesiredState, owned: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Owned objects that nothing desired or kept needs any more."""
    return [obj for obj in owned if (obj["kind"], obj["metadata"]["name"]) not in state.keep]
