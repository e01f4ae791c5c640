"""The Helm chart rendered with the real helm binary (skipped when it has not been built yet)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy_builders import REPO

CHART = REPO / "charts" / "modeldeploy"
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
HELM = shutil.which("helm") or str(CACHE / "bin" / "helm")

pytestmark = pytest.mark.skipif(not Path(HELM).exists(), reason="helm not built yet (make binaries)")


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=False, timeout=120)


def _render(*sets: str) -> list[dict[str, Any]]:
    result = _helm("template", "md", str(CHART), "--namespace", "mdsys", *(f"--set={s}" for s in sets))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _kinds(docs: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return sorted((d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in docs)


def _rules(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    (role,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def _verbs(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for r in rules if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


@pytest.mark.parametrize(
    "sets", [(), ("watch.scope=namespaced",), ("gatewayAPI.enabled=true", "replicaCount=1")]
)
def test_lint_strict(sets: tuple[str, ...]) -> None:
    result = _helm("lint", "--strict", str(CHART), *(f"--set={s}" for s in sets))
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_install_is_cluster_wide_with_least_privilege() -> None:
    docs = _render()
    assert ("ClusterRole", "md-modeldeploy", None) in _kinds(docs)
    assert ("ClusterRole", "md-modeldeploy-router", None) in _kinds(docs)
    rules = _rules(docs, "ClusterRole", "md-modeldeploy")
    # Exactly what the code uses: test_operator_rbac.py derives it; a few landmarks here.
    assert _verbs(rules, "modeldeploy.io", "modeldeployments/status") == {"patch"}
    assert _verbs(rules, "modeldeploy.io", "modeldeployments/finalizers") == {"update"}
    assert _verbs(rules, "discovery.k8s.io", "endpointslices") == set()  # the routers read them, not it
    assert _verbs(rules, "", "pods") == {"list", "watch"}  # cached: list once, then watch
    assert _verbs(rules, "", "events") == {"create"}
    assert _verbs(rules, "rbac.authorization.k8s.io", "clusterroles") == {"bind"}
    assert "update" not in _verbs(rules, "apps", "deployments")
    assert _verbs(rules, "gateway.networking.k8s.io", "httproutes") == set()
    assert _verbs(rules, "", "secrets") == set()  # never: model-store secrets are read by the pods
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in rules)
    router = _rules(docs, "ClusterRole", "md-modeldeploy-router")
    assert router == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
    ]


def test_leader_election_lease_is_namespaced_and_named() -> None:
    rules = _rules(_render(), "Role", "md-modeldeploy-leader-election")
    named = [r for r in rules if r.get("resourceNames")]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["md-modeldeploy"],
            "verbs": ["get", "update"],
        }
    ]


def test_namespaced_install_has_no_cluster_objects() -> None:
    docs = _render("watch.scope=namespaced", "watch.namespaces={ml,ml2}")
    assert not [d for d in docs if d["kind"].startswith("Cluster")]
    roles = [(d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs if d["kind"] == "Role"]
    assert ("md-modeldeploy", "ml") in roles
    assert ("md-modeldeploy-router", "ml2") in roles
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELDEPLOY_OPERATOR_NAMESPACES"] == "ml,ml2"


def test_namespaced_install_lets_the_operator_make_router_rbac_in_watched_namespaces_only() -> None:
    docs = _render("watch.scope=namespaced", "watch.namespaces={ml,ml2}")
    for namespace in ("ml", "ml2"):
        rules = [
            r
            for d in docs
            if d["kind"] == "Role"
            and d["metadata"] == d["metadata"] | {"name": "md-modeldeploy", "namespace": namespace}
            for r in d["rules"]
        ]
        (bind,) = [r for r in rules if "bind" in r["verbs"]]
        assert bind == {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["roles"],
            "resourceNames": ["md-modeldeploy-router"],
            "verbs": ["bind"],
        }
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELDEPLOY_OPERATOR_MANAGE_ROUTER_RBAC"] == "true"
    assert env["MODELDEPLOY_OPERATOR_ROUTER_ROLE_KIND"] == "Role"
    assert not [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["namespace"] != "mdsys"]


def test_namespaced_install_with_a_shared_router_account_grants_no_rbac_rights() -> None:
    docs = _render("watch.scope=namespaced", "watch.namespaces={ml}", "router.manageRBAC=false")
    rules = _rules([d for d in docs if d["metadata"].get("namespace") == "ml"], "Role", "md-modeldeploy")
    assert not [
        r
        for r in rules
        if "rbac.authorization.k8s.io" in r["apiGroups"] or "serviceaccounts" in r["resources"]
    ]
    accounts = [
        (d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs if d["kind"] == "ServiceAccount"
    ]
    assert ("modeldeploy-router", "ml") in accounts
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELDEPLOY_OPERATOR_MANAGE_ROUTER_RBAC"] == "false"


def test_a_shared_router_account_needs_a_namespaced_install() -> None:
    result = _helm("template", "md", str(CHART), "--set=router.manageRBAC=false")
    assert result.returncode != 0
    assert "router.manageRBAC=false needs watch.scope=namespaced" in result.stderr


def test_namespaced_install_defaults_to_the_release_namespace() -> None:
    docs = _render("watch.scope=namespaced")
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"} == {"mdsys"}


def test_gateway_api_grants_httproutes() -> None:
    rules = _rules(_render("gatewayAPI.enabled=true"), "ClusterRole", "md-modeldeploy")
    assert "patch" in _verbs(rules, "gateway.networking.k8s.io", "httproutes")


def test_operator_deployment_is_restricted_and_probed() -> None:
    (deployment,) = [d for d in _render() if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert container["image"] == "ghcr.io/modeldeploy/operator:0.1.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8081, "metrics": 9090}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELDEPLOY_OPERATOR_SERVING_IMAGE"] == "ghcr.io/modeldeploy/serving:0.1.0"
    assert env["MODELDEPLOY_OPERATOR_LEADER_ELECTION"] == "true"


def _images(*sets: str) -> tuple[str, str, str]:
    """(operator, serving, router) images of a rendered chart."""
    (deployment,) = [d for d in _render(*sets) if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    return (
        container["image"],
        env["MODELDEPLOY_OPERATOR_SERVING_IMAGE"],
        env["MODELDEPLOY_OPERATOR_ROUTER_IMAGE"],
    )


def test_image_registry_applies_to_every_image() -> None:
    """`make images REGISTRY=r` pushes r/modeldeploy/{operator,serving}:<appVersion>: image.registry=r
    finds them."""
    assert _images("image.registry=10.244.0.1:5000") == (
        "10.244.0.1:5000/modeldeploy/operator:0.1.0",
        "10.244.0.1:5000/modeldeploy/serving:0.1.0",
        "10.244.0.1:5000/modeldeploy/serving:0.1.0",
    )
    assert _images("image.registry=registry.example.com/") == (
        "registry.example.com/modeldeploy/operator:0.1.0",
        "registry.example.com/modeldeploy/serving:0.1.0",
        "registry.example.com/modeldeploy/serving:0.1.0",
    )


def test_image_registry_per_image_and_empty() -> None:
    operator, serving, router = _images("serving.image.registry=models.example.com", "router.image.tag=dev")
    assert operator == "ghcr.io/modeldeploy/operator:0.1.0"
    assert serving == "models.example.com/modeldeploy/serving:0.1.0"
    assert router == "ghcr.io/modeldeploy/serving:dev"
    # No registry: the repositories are whole names.
    operator, serving, router = _images(
        "image.registry=", "image.repository=my.registry:5000/team/operator", "image.tag=1.2.3"
    )
    assert operator == "my.registry:5000/team/operator:1.2.3"
    assert serving == "modeldeploy/serving:0.1.0"


def test_schema_rejects_a_registry_url() -> None:
    result = _helm("template", "md", str(CHART), "--set=image.registry=https://registry.example.com")
    assert result.returncode != 0


def test_analysis_allow_list_and_bounds_reach_the_operator() -> None:
    from modeldeploy_operator.config import OperatorSettings

    docs = _render(
        "analysis.prometheus.allowedAddresses={http://prometheus.monitoring:9090,https://thanos.example/prom}",
        "analysis.workers=2",
        "analysis.deadlineSeconds=12",
    )
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    settings = OperatorSettings.model_validate(
        {
            k.removeprefix("MODELDEPLOY_OPERATOR_").lower(): v
            for k, v in env.items()
            if "ANALYSIS" in k or "PROMETHEUS" in k
        }
    )
    assert settings.prometheus_allowed_addresses == (
        "http://prometheus.monitoring:9090",
        "https://thanos.example/prom",
    )
    assert (settings.analysis_workers, settings.analysis_deadline_seconds) == (2, 12.0)
    assert settings.analysis_max_response_bytes == 4 * 1024 * 1024
    default = {e["name"]: e.get("value") for e in _operator_env(_render())}
    assert default["MODELDEPLOY_OPERATOR_PROMETHEUS_ALLOWED_ADDRESSES"] == ""  # none unless listed


def _operator_env(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def test_the_instance_id_reaches_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    from modeldeploy_operator.config import OperatorSettings

    for sets, expected in (((), ""), (("operator.instanceId=team-a",), "team-a")):
        env = {e["name"]: e["value"] for e in _operator_env(_render(*sets)) if "value" in e}
        assert env["MODELDEPLOY_OPERATOR_INSTANCE_ID"] == expected
        monkeypatch.setenv("MODELDEPLOY_OPERATOR_INSTANCE_ID", env["MODELDEPLOY_OPERATOR_INSTANCE_ID"])
        assert OperatorSettings().instance_id == expected


def test_env_names_match_operator_settings() -> None:
    from modeldeploy_operator.config import ENV_PREFIX, OperatorSettings

    (deployment,) = [d for d in _render() if d["kind"] == "Deployment"]
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    known = {ENV_PREFIX + field.upper() for field in OperatorSettings.model_fields}
    assert {n for n in names if n.startswith(ENV_PREFIX)} <= known


@pytest.mark.parametrize(
    "bad",
    [
        "bogus=1",
        "operator.bogus=1",
        "watch.scope=everywhere",
        "replicaCount=0",
        "analysis.prometheus.allowedAddresses={prometheus:9090}",
        "analysis.prometheus.allowedAddresses={http://user:pw@prometheus:9090}",
        "analysis.workers=0",
        # kopf's handler timeout: unused since the reconcile queue replaced kopf's per-object daemon
        # (issue 16), so removed; a values file that still sets it fails here rather than be ignored.
        "operator.handlerTimeoutSeconds=300",
        "operator.instanceId=-team",  # not a label value
        "operator.instanceId=" + "x" * 64,
    ],
)
def test_schema_rejects_unknown_or_invalid_values(bad: str) -> None:
    result = _helm("template", "md", str(CHART), f"--set={bad}")
    assert result.returncode != 0
    assert (
        "values don't meet the specifications of the schema" in result.stderr
        or "not allowed" in result.stderr
    )


def test_every_value_is_documented() -> None:
    """Every leaf, or a map it belongs to, has a helm-docs `# --` comment right above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented_parents: list[tuple[int, bool]] = []  # (indent, documented) of enclosing keys
    undocumented = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        while documented_parents and documented_parents[-1][0] >= indent:
            documented_parents.pop()
        comment_block = []
        for previous in reversed(lines[:index]):
            if not previous.strip().startswith("#"):
                break
            comment_block.append(previous.strip())
        documented = any(comment.startswith("# --") for comment in comment_block)
        inherited = any(flag for _, flag in documented_parents)
        if stripped.endswith(":"):
            documented_parents.append((indent, documented))
        elif not (documented or inherited):
            undocumented.append(stripped)
    assert undocumented == []


def test_pod_defaults_reach_the_operator_as_typed_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from modeldeploy_operator.config import OperatorSettings

    docs = _render(
        "defaults.serving.pod.imagePullSecrets[0].name=registry-creds",
        "defaults.serving.pod.nodeSelector.pool=models",
        "defaults.router.pod.tolerations[0].key=edge",
        "defaults.router.pod.tolerations[0].operator=Exists",
        "defaults.serving.podDisruptionBudget.maxUnavailable=2",
    )
    env = {e["name"]: e.get("value") for e in _operator_env(docs)}
    for name, value in env.items():
        if "DEFAULT" in name:
            assert value is not None, name
            monkeypatch.setenv(name, value)  # read as the operator reads them: JSON from its environment
    settings = OperatorSettings()
    assert [s.name for s in settings.serving_pod_defaults.image_pull_secrets] == ["registry-creds"]
    assert settings.serving_pod_defaults.node_selector == {"pool": "models"}
    # The chart's own defaults: small requests and a memory limit for model servers.
    assert settings.serving_pod_defaults.resources is not None
    assert settings.serving_pod_defaults.resources.limits == {"memory": "1Gi"}
    assert [t.key for t in settings.router_pod_defaults.tolerations] == ["edge"]
    assert settings.pod_disruption_budget_default.max_unavailable == 2
    assert settings.pod_disruption_budget_default.enabled is True


@pytest.mark.parametrize(
    "bad",
    [
        "defaults.serving.pod.labels.modeldeploy\\.io/revision=x",
        "defaults.router.pod.annotations.prometheus\\.io/port=1",
        "defaults.serving.pod.env[0].name=MODELDEPLOY_SERVER_PORT",
        "defaults.serving.pod.volumeMounts[0].name=x",
        "defaults.serving.pod.tolerations[0].effect=Sometimes",
        "defaults.serving.pod.bogus=1",
        "defaults.serving.podDisruptionBudget.minAvailable=1",
    ],
)
def test_schema_rejects_pod_defaults_that_take_the_operators_names(bad: str) -> None:
    result = _helm("template", "md", str(CHART), f"--set={bad}")
    assert result.returncode != 0, bad
    assert (
        "values don't meet the specifications of the schema" in result.stderr
        or "not allowed" in result.stderr
    )
