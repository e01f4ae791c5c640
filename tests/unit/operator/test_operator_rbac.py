"""Every RBAC rule of the chart is needed, and every right the code needs is granted: both ways.

What the operator needs is derived from the code, not restated:
- its Kubernetes calls: an AST scan of operator/src finds every `KubeApi` method called (a new kind of
  call fails `test_every_api_call_is_accounted_for` until it is mapped here); the kinds each method
  is used with come from the code's own tables (the objects `desired_state` builds for a spec using
  every feature, `Reconciler.owned_kinds`, the Lease of `k8s/leader.py`);
- kopf's calls: the resources of every `@kopf.on...`/`@kopf.daemon` handler (read from the registry
  kopf builds when handlers.py is imported) are listed and watched; kopf patches the objects it
  handles (finalizers, progress annotations) and posts core/v1 Events;
- what it grants: the rules of the Roles it builds for routers (RBAC lets it grant only rights it
  holds) and `bind` on the chart's router role, by name;
- owner references with blockOwnerDeletion: `update` on modeldeployments/finalizers.
The router's needs come from its sources: a list and a watch of EndpointSlices and of its ConfigMap.

The API-server-level proof (remove each rule, see the 403): test_operator_rbac_private.py, on a
private control plane.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy_operator.domain.desired_state import (
    NETWORK_POLICY_KINDS,
    OWNED_KINDS,
    ROUTER_RBAC_KINDS,
    BuildOptions,
    desired_state,
)
from modeldeploy_operator.domain.network_policy import NetworkPolicyOptions
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.rollout import plan
from modeldeploy_operator.k8s.api import KubeApi
from modeldeploy_operator.k8s.kinds import kind_of
from modeldeploy_operator.reconciler import cached_kinds

from modeldeploy_builders import NOW, REPO, make_spec, observed_for

CHART = REPO / "charts" / "modeldeploy"
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
HELM = shutil.which("helm") or str(CACHE / "bin" / "helm")
OPERATOR_SRC = REPO / "operator" / "src" / "modeldeploy_operator"

Permission = tuple[str, str, str, str | None]
"""(API group, resource, verb, resource name or None for any)."""

# Verbs each KubeApi method needs, per object it is called on (server-side apply may create).
METHOD_VERBS: dict[str, tuple[str, ...]] = {
    "apply": ("create", "patch"),
    "create": ("create",),
    "replace": ("update",),
    "get": ("get",),
    "list": ("list",),
    "list_all": ("list",),
    "watch": ("watch",),
    "delete": ("delete",),
    "patch": ("patch",),
    "patch_status": ("patch",),
    "event": ("create",),
}
ROUTER_ROLE = "md-modeldeploy-router"


def _group_resource(api_version: str, kind: str) -> tuple[str, str]:
    k = kind_of(api_version, kind)
    group = "" if api_version == "v1" else api_version.rsplit("/", 1)[0]
    return group, k.plural


def _api_methods_called() -> set[str]:
    """Names of KubeApi methods called anywhere in the operator (`<something>.api.<m>(` or `api.<m>(`)."""
    methods = {name for name in dir(KubeApi) if not name.startswith("_")} - {"api_client", "field_manager"}
    called = set()
    for path in OPERATOR_SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in methods
            ):
                owner = node.func.value
                named_api = (isinstance(owner, ast.Attribute) and owner.attr == "api") or (
                    isinstance(owner, ast.Name) and owner.id == "api"
                )
                via_reconciler = isinstance(owner, ast.Call)  # _get_reconciler().api.get(...) is an Attribute
                if named_api or via_reconciler:
                    called.add(node.func.attr)
    return called


def _is_api(owner: ast.expr) -> bool:
    """`self.api`, `x.api`, `api` or `_get_reconciler().api`: a KubeApi."""
    return (isinstance(owner, ast.Attribute) and owner.attr == "api") or (
        isinstance(owner, ast.Name) and owner.id == "api"
    )


def _value(arg: ast.expr, module: object) -> object:
    """A literal, or a module-level constant (a str like API_VERSION, or a Kind); None otherwise."""
    if isinstance(arg, ast.Constant):
        return arg.value
    if isinstance(arg, ast.Name):
        return getattr(module, arg.id, None)
    return None


def _literal_calls() -> set[tuple[str, str, str]]:
    """(method, apiVersion, kind) of every KubeApi call whose object is written in the call itself:
    `api.list("v1", "Pod", ...)`, or a module-level Kind constant (`api.patch(_DEPLOYMENT, ...)`)."""
    import importlib

    from modeldeploy_operator.k8s.kinds import Kind

    found = set()
    for path in OPERATOR_SRC.rglob("*.py"):
        module_name = "modeldeploy_operator." + ".".join(path.relative_to(OPERATOR_SRC).with_suffix("").parts)
        module = importlib.import_module(module_name.removesuffix(".__init__"))
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in METHOD_VERBS or not node.args or not _is_api(node.func.value):
                continue
            values = [_value(arg, module) for arg in node.args[:2]]
            if isinstance(values[0], Kind):
                found.add((node.func.attr, values[0].api_version, values[0].kind))
            elif len(values) == 2 and all(isinstance(v, str) for v in values):
                found.add((node.func.attr, str(values[0]), str(values[1])))
    return found


def test_every_api_call_is_accounted_for() -> None:
    assert _api_methods_called() <= set(METHOD_VERBS), "map the new KubeApi method in METHOD_VERBS"
    assert {"apply", "delete", "patch", "patch_status", "event", "get"} <= _api_methods_called()
    literal = _literal_calls()
    assert ("patch", "apps/v1", "Deployment") in literal
    assert ("patch_status", "modeldeploy.io/v1alpha1", "ModelDeployment") in literal
    # Reads are cached (list + watch per kind): no GET of a ModelDeployment before a reconcile any more.
    assert ("get", "modeldeploy.io/v1alpha1", "ModelDeployment") not in literal
    cached = {(k.api_version, k.kind) for k in cached_kinds(OWNED_KINDS)}
    assert {("v1", "Pod"), ("apps/v1", "ReplicaSet"), ("autoscaling/v2", "HorizontalPodAutoscaler")} <= cached


def _applied_kinds(gateway: bool, manage_router_rbac: bool, network_policies: bool) -> set[tuple[str, str]]:
    """Kinds desired_state builds for specs that use every feature (router with 2 replicas, HPA,
    Gateway API, NetworkPolicies)."""
    kinds: set[tuple[str, str]] = set()
    owner = ModelDeploymentRef(name="churn", namespace="ml", uid="u")
    options = BuildOptions(
        serving_image="s",
        router_image="r",
        router_cluster_role=ROUTER_ROLE,
        router_service_account=None if manage_router_rbac else "modeldeploy-router",
        network_policy=NetworkPolicyOptions("mdsys", (("app", "op"),)) if network_policies else None,
    )
    specs = [make_spec(autoscaling={"minReplicas": 1, "maxReplicas": 3}, traffic={"routerReplicas": 2})]
    if gateway:
        specs.append(
            make_spec(traffic={"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}})
        )
    for spec in specs:
        (variant,) = resolve_variants("churn", spec)
        decided = plan("churn", spec, [observed_for(spec, ready=2)], (), NOW)
        for manifest in desired_state(owner, spec, decided, options=options).manifests:
            kinds.add((manifest["apiVersion"], manifest["kind"]))
        assert variant
    return kinds


def _granted_to_routers(manage_router_rbac: bool) -> set[Permission]:
    """Rules of the Roles the operator builds (it must hold every right it grants)."""
    if not manage_router_rbac:
        return set()
    owner = ModelDeploymentRef(name="churn", namespace="ml", uid="u")
    spec = make_spec()
    decided = plan("churn", spec, [observed_for(spec, ready=1)], (), NOW)
    options = BuildOptions(serving_image="s", router_image="r", router_cluster_role=ROUTER_ROLE)
    granted: set[Permission] = set()
    for manifest in desired_state(owner, spec, decided, options=options).manifests:
        if manifest["kind"] == "Role":
            for rule in manifest["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        granted |= {(group, resource, verb, None) for verb in rule["verbs"]}
    return granted


def _kopf_resources() -> set[tuple[str, str]]:
    """(group, plural) of every resource a kopf handler of handlers.py is registered for."""
    from modeldeploy_operator import handlers  # registers the handlers with kopf's default registry

    tree = ast.parse(Path(handlers.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        text = ast.unparse(node.func)
        if text.startswith("kopf.on.") or text == "kopf.daemon":
            args = [eval(ast.unparse(a), vars(handlers)) for a in node.args[:3]]  # our own source
            if len(args) == 3:
                found.add((args[0], args[2]))
    return found


def operator_needs(
    *, cluster: bool, gateway: bool, manage_router_rbac: bool, network_policies: bool = True
) -> set[Permission]:
    needs: set[Permission] = set()

    def add(api_version: str, kind: str, method: str, subresource: str = "") -> None:
        group, plural = _group_resource(api_version, kind)
        needs.update((group, plural + subresource, verb, None) for verb in METHOD_VERBS[method])

    for api_version, kind in _applied_kinds(gateway, manage_router_rbac, network_policies):
        add(api_version, kind, "apply")
    # NetworkPolicies are listed and pruned whether or not the operator makes them (Reconciler.owned_kinds).
    owned = OWNED_KINDS + NETWORK_POLICY_KINDS + (ROUTER_RBAC_KINDS if manage_router_rbac else ())
    for api_version, kind in owned:
        if kind == "HTTPRoute" and not gateway:
            continue  # cached, but a 403 without the Gateway provider is expected (k8s/cache.py)
        add(api_version, kind, "delete")
    # What the reconciler reads is cached: listed once, then watched (k8s/cache.py).
    for cached in cached_kinds(owned):
        if cached.kind == "HTTPRoute" and not gateway:
            continue
        add(cached.api_version, cached.kind, "list_all")
        add(cached.api_version, cached.kind, "watch")
    for method, api_version, kind in _literal_calls():  # pods, replica sets, scale, fresh reads, status
        if kind == "Lease":
            continue  # the leader-election Role, checked on its own
        add(api_version, kind, method, "/status" if method == "patch_status" else "")
    needs.add(("", "events", "create", None))  # KubeApi.event, and kopf's own Events
    for group, plural in _kopf_resources():
        needs |= {(group, plural, "list", None), (group, plural, "watch", None)}
    needs.add(("modeldeploy.io", "modeldeployments", "patch", None))  # kopf: finalizer, annotations
    needs.add(("modeldeploy.io", "modeldeployments/finalizers", "update", None))  # blockOwnerDeletion
    needs |= _granted_to_routers(manage_router_rbac)
    if manage_router_rbac:
        needs.add(("rbac.authorization.k8s.io", "clusterroles" if cluster else "roles", "bind", ROUTER_ROLE))
    return needs


def _helm_template(*sets: str) -> list[dict[str, Any]]:
    if not Path(HELM).exists():
        pytest.skip("helm not built yet (make binaries)")
    result = subprocess.run(
        [HELM, "template", "md", str(CHART), "--namespace", "mdsys", *(f"--set={s}" for s in sets)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _permissions(role: dict[str, Any]) -> set[Permission]:
    granted: set[Permission] = set()
    for rule in role["rules"]:
        names = rule.get("resourceNames") or [None]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted |= {(group, resource, verb, name) for name in names}
    return granted


def _role(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    (role,) = [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"]["name"] == name
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    return role


INSTALLS = [
    pytest.param((), True, False, True, id="cluster"),
    pytest.param(("networkPolicies.enabled=false",), True, False, True, id="cluster-no-network-policies"),
    pytest.param(("gatewayAPI.enabled=true",), True, True, True, id="cluster-gateway"),
    pytest.param(("watch.scope=namespaced", "watch.namespaces={ml}"), False, False, True, id="namespaced"),
    pytest.param(
        ("watch.scope=namespaced", "watch.namespaces={ml}", "router.manageRBAC=false"),
        False,
        False,
        False,
        id="namespaced-shared-router-account",
    ),
]


@pytest.mark.parametrize(("sets", "cluster", "gateway", "manage"), INSTALLS)
def test_operator_rules_are_exactly_what_the_code_needs(
    sets: tuple[str, ...], cluster: bool, gateway: bool, manage: bool
) -> None:
    docs = _helm_template(*sets)
    role = (
        _role(docs, "ClusterRole", "md-modeldeploy")
        if cluster
        else _role(docs, "Role", "md-modeldeploy", "ml")
    )
    granted = _permissions(role)
    needed = operator_needs(
        cluster=cluster,
        gateway=gateway,
        manage_router_rbac=manage,
        network_policies="networkPolicies.enabled=false" not in sets,
    )
    assert granted - needed == set(), "granted but used by nothing"
    assert needed - granted == set(), "used but not granted"


@pytest.mark.parametrize(("sets", "cluster", "gateway", "manage"), INSTALLS)
def test_no_escalate_no_wildcards_and_bind_only_the_router_role(
    sets: tuple[str, ...], cluster: bool, gateway: bool, manage: bool
) -> None:
    for doc in _helm_template(*sets):
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        for group, resource, verb, name in _permissions(doc):
            assert "*" not in (group, resource, verb)
            assert verb not in ("escalate", "impersonate")
            assert resource != "secrets"
            if verb == "bind":
                assert name == ROUTER_ROLE


def test_leader_election_rules_are_what_the_lease_code_uses() -> None:
    from modeldeploy_operator.k8s import leader

    tree = ast.parse(Path(leader.__file__).read_text())
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "api"
    }
    assert called == {"get", "create", "replace"}
    # create cannot be limited by name
    needed: set[tuple[str, str, str, str | None]] = {("coordination.k8s.io", "leases", "create", None)}
    needed |= {("coordination.k8s.io", "leases", verb, "md-modeldeploy") for verb in ("get", "update")}
    assert _permissions(_role(_helm_template(), "Role", "md-modeldeploy-leader-election")) == needed


def test_router_rules_are_what_the_router_calls() -> None:
    """The router lists and watches (kube.informer) EndpointSlices of its namespace and its ConfigMap
    by name (a fieldSelector on metadata.name, authorised against resourceNames)."""
    kube = (REPO / "serving" / "src" / "modeldeploy_serving" / "router" / "kube.py").read_text()
    sources = (REPO / "serving" / "src" / "modeldeploy_serving" / "router" / "sources.py").read_text()
    assert '"GET"' in kube
    assert not any(write in kube for write in (".post(", ".put(", ".patch(", ".delete("))
    assert 'f"metadata.name={self._name}"' in sources
    endpointslices = {("discovery.k8s.io", "endpointslices", verb, None) for verb in ("list", "watch")}
    cluster = _helm_template()
    assert _permissions(_role(cluster, "ClusterRole", ROUTER_ROLE)) == endpointslices
    namespaced = _helm_template("watch.scope=namespaced", "watch.namespaces={ml}")
    assert _permissions(_role(namespaced, "Role", ROUTER_ROLE, "ml")) == endpointslices
    assert _granted_to_routers(True) == {("", "configmaps", "list", None), ("", "configmaps", "watch", None)}


def test_serving_disruption_budgets_and_users_hpas_are_in_what_the_code_needs() -> None:
    """A serving revision's PodDisruptionBudget is applied even with one router replica, and the HPAs of
    the namespace are listed (to find users' HPAs): both derived above, both granted by the chart."""
    owner = ModelDeploymentRef(name="churn", namespace="ml", uid="u")
    spec = make_spec()
    decided = plan("churn", spec, [observed_for(spec, ready=2)], (), NOW)
    options = BuildOptions(serving_image="s", router_image="r", router_cluster_role=ROUTER_ROLE)
    kinds = {
        (m["kind"], m["metadata"]["name"])
        for m in desired_state(owner, spec, decided, options=options).manifests
    }
    assert any(kind == "PodDisruptionBudget" and not name.endswith("-router") for kind, name in kinds)
    needs = operator_needs(cluster=True, gateway=False, manage_router_rbac=True)
    assert {
        ("policy", "poddisruptionbudgets", verb, None) for verb in ("create", "patch", "list", "delete")
    } <= needs
    assert ("autoscaling", "horizontalpodautoscalers", "list", None) in needs
