"""NetworkPolicies of a ModelDeployment (domain/network_policy.py), their place in desired_state, the
operator's settings that turn them on, and the chart's policy for the operator's own pods.

What each policy lets in is checked by a small evaluator of the NetworkPolicy rules the builders use
(podSelector, namespaceSelector by name, ports), over a table of (source, destination) pairs.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from pydantic import ValidationError
from test_operator_rbac import _helm_template

from modeldeploy_contract.joiner_settings import JOINER_PORT
from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain import labels as lbl
from modeldeploy_operator.domain.desired_state import BuildOptions, desired_state, stale_objects
from modeldeploy_operator.domain.joiner import joiner_selector
from modeldeploy_operator.domain.network_policy import (
    NetworkPolicyOptions,
    build_network_policies,
    joiner_policy_name,
    router_policy_name,
    server_policy_name,
)
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import SERVER_PORT
from modeldeploy_operator.domain.rollout import plan

from modeldeploy_builders import NOW, make_spec, observed_for

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="u-1")
OPERATOR_LABELS = (("app.kubernetes.io/name", "modeldeploy"), ("app.kubernetes.io/component", "operator"))
OPTIONS = NetworkPolicyOptions("mdsys", OPERATOR_LABELS, ("monitoring",))

SERVER = {lbl.DEPLOYMENT_LABEL: "churn", "app.kubernetes.io/component": lbl.SERVER_COMPONENT, "x": "1"}
ROUTER = lbl.router_selector("churn")
OPERATOR = dict(OPERATOR_LABELS)
OTHER_ROUTER = lbl.router_selector("other")
STRANGER: dict[str, str] = {"app": "curl"}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()) and all(
        expr["operator"] == "In" and labels.get(expr["key"]) in expr["values"]
        for expr in selector.get("matchExpressions", [])
    )


def _peer_admits(peer: dict[str, Any], policy_ns: str, src_ns: str, src_labels: dict[str, str]) -> bool:
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": src_ns}):
            return False
    elif src_ns != policy_ns:  # a podSelector alone: the policy's own namespace
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], src_labels)


def admitted(
    policies: list[dict[str, Any]], dst_labels: dict[str, str], src: tuple[str, dict[str, str]], port: int
) -> bool:
    """Would a connection from src (namespace, labels) to a pod of OWNER's namespace be let in?"""
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], dst_labels)]
    if not selecting:
        return True  # no policy selects the pod: everything is allowed
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            if port not in [p["port"] for p in rule.get("ports", [{"port": port}])]:
                continue
            peers = rule.get("from")
            if peers is None or any(
                _peer_admits(peer, policy["metadata"]["namespace"], *src) for peer in peers
            ):
                return True
    return False


CASES = [
    # (destination, source namespace, source labels, port, behind router, admitted)
    pytest.param(SERVER, "ml", ROUTER, SERVER_PORT, True, True, id="router-to-server"),
    pytest.param(SERVER, "mdsys", OPERATOR, SERVER_PORT, True, True, id="operator-to-server"),
    pytest.param(SERVER, "monitoring", STRANGER, SERVER_PORT, True, True, id="metrics-namespace-to-server"),
    pytest.param(SERVER, "ml", STRANGER, SERVER_PORT, True, False, id="same-namespace-stranger-to-server"),
    pytest.param(SERVER, "elsewhere", STRANGER, SERVER_PORT, True, False, id="stranger-to-server"),
    pytest.param(SERVER, "elsewhere", ROUTER, SERVER_PORT, True, False, id="router-lookalike-elsewhere"),
    pytest.param(SERVER, "ml", OTHER_ROUTER, SERVER_PORT, True, False, id="another-routers-pods"),
    pytest.param(SERVER, "ml", OPERATOR, SERVER_PORT, True, False, id="operator-labels-wrong-namespace"),
    pytest.param(SERVER, "mdsys", STRANGER, SERVER_PORT, True, False, id="other-pod-of-operator-namespace"),
    pytest.param(SERVER, "ml", ROUTER, 9999, True, False, id="router-to-other-port"),
    pytest.param(ROUTER, "elsewhere", STRANGER, SERVER_PORT, True, True, id="caller-to-router"),
    pytest.param(ROUTER, "elsewhere", STRANGER, 9999, True, False, id="caller-to-router-other-port"),
    pytest.param(SERVER, "elsewhere", STRANGER, SERVER_PORT, False, True, id="no-router-caller-to-server"),
    pytest.param(SERVER, "elsewhere", STRANGER, 9999, False, False, id="no-router-other-port"),
    pytest.param(STRANGER, "elsewhere", STRANGER, 9999, True, True, id="unselected-pod-untouched"),
]


@pytest.mark.parametrize(("dst", "src_ns", "src_labels", "port", "behind_router", "expected"), CASES)
def test_who_is_let_in(
    dst: dict[str, str],
    src_ns: str,
    src_labels: dict[str, str],
    port: int,
    behind_router: bool,
    expected: bool,
) -> None:
    policies = build_network_policies(OWNER, OPTIONS, behind_router=behind_router)
    assert admitted(policies, dst, (src_ns, src_labels), port) is expected


def test_without_metrics_namespaces_only_router_and_operator_reach_servers() -> None:
    policies = build_network_policies(
        OWNER, NetworkPolicyOptions("mdsys", OPERATOR_LABELS), behind_router=True
    )
    assert not admitted(policies, SERVER, ("monitoring", STRANGER), SERVER_PORT)
    assert admitted(policies, SERVER, ("mdsys", OPERATOR), SERVER_PORT)
    (server,) = [p for p in policies if p["metadata"]["name"] == server_policy_name("churn")]
    assert len(server["spec"]["ingress"][0]["from"]) == 2


def test_objects_are_owned_ingress_only_and_named_for_their_deployment() -> None:
    policies = build_network_policies(OWNER, OPTIONS, behind_router=True)
    assert [p["metadata"]["name"] for p in policies] == ["churn-model-servers", router_policy_name("churn")]
    for policy in policies:
        assert policy["apiVersion"] == "networking.k8s.io/v1"
        assert policy["kind"] == "NetworkPolicy"
        assert policy["metadata"]["namespace"] == "ml"
        assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert policy["metadata"]["labels"][lbl.DEPLOYMENT_LABEL] == "churn"
        assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress (stores, DNS, API server) stays open
    assert [p["metadata"]["name"] for p in build_network_policies(OWNER, OPTIONS, behind_router=False)] == [
        "churn-model-servers"
    ]


def test_long_names_fit() -> None:
    long = "m" * 40  # the CRD's limit on a ModelDeployment's name
    assert len(server_policy_name(long)) <= 63
    assert len(router_policy_name(long)) <= 63


def _state(options: NetworkPolicyOptions | None, **spec_overrides: Any) -> list[dict[str, Any]]:
    spec = make_spec(**spec_overrides)
    decided = plan("churn", spec, [observed_for(spec, ready=1)], (), NOW)
    build = BuildOptions(serving_image="s", router_image="r", network_policy=options)
    return list(desired_state(OWNER, spec, decided, options=build).manifests)


def test_desired_state_carries_them_only_when_on() -> None:
    on = [m["metadata"]["name"] for m in _state(OPTIONS) if m["kind"] == "NetworkPolicy"]
    assert on == ["churn-model-servers", "churn-router"]
    assert [m for m in _state(None) if m["kind"] == "NetworkPolicy"] == []
    gateway = _state(
        OPTIONS, traffic={"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    )
    assert [m["metadata"]["name"] for m in gateway if m["kind"] == "NetworkPolicy"] == ["churn-model-servers"]


def test_turning_them_off_prunes_them() -> None:
    spec = make_spec()
    decided = plan("churn", spec, [observed_for(spec, ready=1)], (), NOW)
    state = desired_state(OWNER, spec, decided, options=BuildOptions(serving_image="s", router_image="r"))
    made = [m for m in _state(OPTIONS) if m["kind"] == "NetworkPolicy"]
    assert stale_objects(state, made) == made


def test_settings() -> None:
    settings = OperatorSettings(
        network_policies=True,
        operator_namespace="mdsys",
        # strings, as the chart sets them (the settings parse them)
        operator_pod_labels="app.kubernetes.io/name=modeldeploy, app.kubernetes.io/component=operator",  # type: ignore[arg-type]
        metrics_namespaces="monitoring, obs",  # type: ignore[arg-type]
    )
    assert settings.network_policy_options() == NetworkPolicyOptions(
        "mdsys", OPERATOR_LABELS, ("monitoring", "obs")
    )
    assert OperatorSettings().network_policy_options() is None


@pytest.mark.parametrize(
    "bad",
    [
        {"network_policies": True},  # nobody would let the operator in
        {"network_policies": True, "operator_namespace": "mdsys"},
        {"operator_pod_labels": "no-equals-sign"},
        {"operator_pod_labels": "=value"},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OperatorSettings(**bad)


def _operator_policy(*sets: str) -> list[dict[str, Any]]:
    return [d for d in _helm_template(*sets) if d["kind"] == "NetworkPolicy"]


def test_chart_policy_for_the_operator_pods() -> None:
    (policy,) = _operator_policy("networkPolicies.metricsNamespaces={monitoring}")
    deployment = next(d for d in _helm_template() if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["spec"]["podSelector"], pod_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [8081, 9090]
    test_pod = {"app.kubernetes.io/instance": "md", "app.kubernetes.io/component": "test"}
    assert admitted([policy], pod_labels, ("mdsys", test_pod), 8081)
    assert admitted([policy], pod_labels, ("monitoring", STRANGER), 9090)
    assert not admitted([policy], pod_labels, ("elsewhere", STRANGER), 9090)
    assert not admitted([policy], pod_labels, ("mdsys", STRANGER), 9090)


def test_chart_passes_the_operator_its_settings() -> None:
    deployment = next(
        d
        for d in _helm_template("networkPolicies.metricsNamespaces={monitoring,obs}")
        if d["kind"] == "Deployment"
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings = OperatorSettings(
        **{
            key.removeprefix("MODELDEPLOY_OPERATOR_").lower(): env[key]
            for key in (
                "MODELDEPLOY_OPERATOR_NETWORK_POLICIES",
                "MODELDEPLOY_OPERATOR_OPERATOR_NAMESPACE",
                "MODELDEPLOY_OPERATOR_OPERATOR_POD_LABELS",
                "MODELDEPLOY_OPERATOR_METRICS_NAMESPACES",
            )
        }
    )
    options = settings.network_policy_options()
    assert options is not None
    assert options.operator_namespace == "mdsys"
    assert dict(options.operator_pod_labels) == deployment["spec"]["selector"]["matchLabels"]
    assert options.metrics_namespaces == ("monitoring", "obs")


def test_chart_switch_off() -> None:
    assert _operator_policy("networkPolicies.enabled=false") == []
    deployment = next(d for d in _helm_template("networkPolicies.enabled=false") if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELDEPLOY_OPERATOR_NETWORK_POLICIES"] == "false"


@pytest.mark.parametrize(
    "bad", ["networkPolicies.metricsNamespaces={Not_A_Namespace}", "networkPolicies.enabled=maybe"]
)
def test_chart_refuses_bad_values(bad: str) -> None:
    from test_operator_rbac import CHART, HELM

    result = subprocess.run(
        [HELM, "template", "md", str(CHART), f"--set={bad}"], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "networkPolicies" in result.stderr


# --- the label joiner (spec.effectiveness) ---
JOINER = {lbl.DEPLOYMENT_LABEL: "churn", "app.kubernetes.io/component": "joiner", "x": "1"}
STREAM_POD = {lbl.DEPLOYMENT_LABEL: "churn", "app.kubernetes.io/component": lbl.STREAM_COMPONENT, "y": "2"}
OTHER_SERVER = {lbl.DEPLOYMENT_LABEL: "other", "app.kubernetes.io/component": lbl.SERVER_COMPONENT}
OTHER_JOINER_CLIENT = {lbl.DEPLOYMENT_LABEL: "churn", "app.kubernetes.io/component": "something-else"}

JOINER_CASES = [
    # (source namespace, source labels, port, behind router, admitted)
    pytest.param("ml", SERVER, JOINER_PORT, True, True, id="model-server-feeds"),
    pytest.param("ml", STREAM_POD, JOINER_PORT, True, True, id="stream-pod-feeds"),
    pytest.param("ml", ROUTER, JOINER_PORT, True, True, id="router-forwards-feedback"),
    pytest.param("mdsys", OPERATOR, JOINER_PORT, True, True, id="operator-reads-the-summary"),
    pytest.param("monitoring", STRANGER, JOINER_PORT, True, True, id="metrics-namespace-scrapes"),
    pytest.param("ml", STRANGER, JOINER_PORT, True, False, id="same-namespace-stranger"),
    pytest.param("elsewhere", STRANGER, JOINER_PORT, True, False, id="stranger"),
    pytest.param("elsewhere", SERVER, JOINER_PORT, True, False, id="server-lookalike-elsewhere"),
    pytest.param("ml", OTHER_SERVER, JOINER_PORT, True, False, id="another-deployments-server"),
    pytest.param("ml", OTHER_ROUTER, JOINER_PORT, True, False, id="another-deployments-router"),
    pytest.param("ml", OTHER_JOINER_CLIENT, JOINER_PORT, True, False, id="own-deployment-other-component"),
    pytest.param("ml", OPERATOR, JOINER_PORT, True, False, id="operator-labels-wrong-namespace"),
    pytest.param("mdsys", STRANGER, JOINER_PORT, True, False, id="other-pod-of-operator-namespace"),
    pytest.param("ml", SERVER, 9999, True, False, id="server-to-other-port"),
    pytest.param("elsewhere", STRANGER, JOINER_PORT, False, True, id="no-router-callers-post-labels"),
    pytest.param("elsewhere", STRANGER, 9999, False, False, id="no-router-other-port"),
]


@pytest.mark.parametrize(("src_ns", "src_labels", "port", "behind_router", "expected"), JOINER_CASES)
def test_who_reaches_the_joiner(
    src_ns: str, src_labels: dict[str, str], port: int, behind_router: bool, expected: bool
) -> None:
    policies = build_network_policies(OWNER, OPTIONS, behind_router=behind_router, joiner=True)
    assert admitted(policies, JOINER, (src_ns, src_labels), port) is expected


def test_the_joiner_policy_selects_exactly_the_joiners_pods() -> None:
    (policy,) = [
        p
        for p in build_network_policies(OWNER, OPTIONS, behind_router=True, joiner=True)
        if p["metadata"]["name"] == joiner_policy_name("churn")
    ]
    assert policy["spec"]["podSelector"]["matchLabels"] == joiner_selector("churn")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    # the joiner's own selector is what its Deployment's pods carry, and no other pod of the deployment's
    assert not _selects(policy["spec"]["podSelector"], SERVER)
    assert not _selects(policy["spec"]["podSelector"], ROUTER)
    assert len(joiner_policy_name("m" * 40)) <= 63
    # the joiner's policy changes nothing for the servers and the router
    assert not admitted(
        build_network_policies(OWNER, OPTIONS, behind_router=True, joiner=True),
        SERVER,
        ("ml", JOINER),
        SERVER_PORT,
    )


def test_desired_state_adds_the_joiner_policy_with_effectiveness_only() -> None:
    names = [m["metadata"]["name"] for m in _state(OPTIONS, effectiveness={}) if m["kind"] == "NetworkPolicy"]
    assert names == ["churn-model-servers", "churn-router", "churn-joiner"]
    off = [m["metadata"]["name"] for m in _state(OPTIONS, effectiveness={"enabled": False})]
    assert "churn-joiner" not in off
    joiner = next(
        m
        for m in _state(OPTIONS, effectiveness={})
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "churn-joiner"
    )
    assert _selects(
        next(
            m
            for m in _state(OPTIONS, effectiveness={})
            if m["kind"] == "NetworkPolicy" and m["metadata"]["name"] == "churn-joiner"
        )["spec"]["podSelector"],
        joiner["spec"]["template"]["metadata"]["labels"],
    )
