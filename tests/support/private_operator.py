"""The operator as the chart would run it, on a private control plane (modeldeploy_testcluster.private):
the chart's roles (`helm template`), the chart Deployment's environment, a token of the chart's
ServiceAccount (or one bound to a pod, so the audit log names the replica). Used by the RBAC and the
leader-election tests (tests/integration/operator/test_operator_rbac_private.py, test_operator_ha.py)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import urllib.error
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from modeldeploy_testcluster import nodes
from modeldeploy_testcluster.controlplane import free_port
from modeldeploy_testcluster.kubeconfig import write_kubeconfig
from modeldeploy_testcluster.layout import binaries_dir
from modeldeploy_testcluster.private import PrivateLayout, Process, private_control_plane

from cluster_helpers import GROUP, PLURAL, REPO, VERSION, wait_for

RELEASE, SYSTEM = "md", "mdsys"
OPERATOR = f"{RELEASE}-modeldeploy"  # the chart's fullname: ServiceAccount, (Cluster)Role, Lease
USER = f"system:serviceaccount:{SYSTEM}:{OPERATOR}"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [USER]}, {"level": "None"}],
}
"""Every request of the operator's ServiceAccount (both replicas', told apart by the pod their token is
bound to, in `user.extra`)."""
STAGES = ("ResponseStarted", "ResponseComplete")
KWOK = {"nodeSelector": {"type": "kwok"}, "tolerations": [nodes.KWOK_TOLERATION]}
WAIT = 240.0
"""Seconds for one condition (a start of the operator, a reconcile) on a loaded 2-core machine."""


# --- the chart -------------------------------------------------------------------------------------


def lease_holder(api: client.ApiClient) -> str | None:
    """Who holds the operator's Lease (None: no Lease yet, no holder, or the API server not answering)."""
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(OPERATOR, SYSTEM)
    except client.ApiException:
        return None
    return str(lease.spec.holder_identity or "") or None


def helm_template(*sets: str) -> list[dict[str, Any]]:
    helm = shutil.which("helm") or str(binaries_dir() / "helm")
    result = subprocess.run(
        [helm, "template", RELEASE, str(REPO / "charts" / "modeldeploy"), "--namespace", SYSTEM]
        + [f"--set={s}" for s in sets],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    (doc,) = [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"]["name"] == name
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    return doc


def rbac_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kinds = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    return [d for d in docs if d["kind"] in kinds]


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The chart Deployment's environment (literal values), with free local ports."""
    deployment = find(docs, "Deployment", OPERATOR)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: str(e["value"]) for e in container["env"] if "value" in e}
    env["MODELDEPLOY_OPERATOR_HEALTH_PORT"] = str(free_port())
    env["MODELDEPLOY_OPERATOR_METRICS_PORT"] = str(free_port())
    env["POD_NAME"] = f"operator-{uuid.uuid4().hex[:6]}"
    return env


# --- the private control plane ---------------------------------------------------------------------


@dataclass
class Plane:
    layout: PrivateLayout
    api: client.ApiClient
    work: Path

    def apply(self, doc: dict[str, Any]) -> None:
        """Create or replace an RBAC object (as the admin)."""
        rbac = client.RbacAuthorizationV1Api(self.api)
        kind, name, namespace = doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")
        snake = {
            "ClusterRole": "cluster_role",
            "ClusterRoleBinding": "cluster_role_binding",
            "Role": "role",
            "RoleBinding": "role_binding",
        }[kind]
        args = (namespace,) if namespace else ()
        ns = "namespaced_" if namespace else ""
        try:
            getattr(rbac, f"create_{ns}{snake}")(*args, doc)
        except client.ApiException as error:
            if error.status != 409:
                raise
            getattr(rbac, f"replace_{ns}{snake}")(name, *args, doc)

    def remove_rbac(self, docs: list[dict[str, Any]]) -> None:
        rbac = client.RbacAuthorizationV1Api(self.api)
        for doc in docs:
            kind, name, namespace = doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")
            with contextlib.suppress(client.ApiException):
                if kind == "ClusterRole":
                    rbac.delete_cluster_role(name)
                elif kind == "ClusterRoleBinding":
                    rbac.delete_cluster_role_binding(name)
                elif kind == "Role":
                    rbac.delete_namespaced_role(name, namespace)
                else:
                    rbac.delete_namespaced_role_binding(name, namespace)

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:5]}"
        client.CoreV1Api(self.api).create_namespace({"metadata": {"name": name}})
        return name

    def drop_namespace(self, name: str) -> None:
        """Delete it (not waiting): the old finalizer is stripped first, in case the operator could not."""
        custom = client.CustomObjectsApi(self.api)
        with contextlib.suppress(client.ApiException):
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL)["items"]:
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, name, PLURAL, item["metadata"]["name"], {"metadata": {"finalizers": None}}
                )
        with contextlib.suppress(client.ApiException):
            client.CoreV1Api(self.api).delete_namespace(name)

    def kubeconfig(self, out: Path, pod: client.V1Pod | None = None) -> Path:
        """A kubeconfig with a token of the operator's ServiceAccount; bound to `pod` if given (the API
        server then puts the pod's name in the user's `extra`, so the audit log tells replicas apart)."""
        spec: dict[str, Any] = {"expirationSeconds": 6 * 3600}
        if pod is not None:
            spec["boundObjectRef"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
            }
        token = (
            client.CoreV1Api(self.api)
            .create_namespaced_service_account_token(OPERATOR, SYSTEM, {"spec": spec})
            .status.token
        )
        ca = self.layout.pki_dir / "ca.crt"
        return write_kubeconfig(out, self.layout.apiserver_url, ca, OPERATOR, token=token, namespace=SYSTEM)

    def audit(self, since: int) -> list[dict[str, Any]]:
        """Audit events of the operator's user from byte `since` of the log on: ResponseComplete, and
        ResponseStarted (a watch's, logged when it opens; its ResponseComplete only when it ends)."""
        return [
            e for e in self.audit_events(since) if e.get("stage") in STAGES and e["user"]["username"] == USER
        ]

    def audit_events(self, since: int = 0) -> list[dict[str, Any]]:
        """Every event of the audit log from byte `since` on."""
        with self.layout.audit_log.open("rb") as f:
            f.seek(since)
            lines = f.read().splitlines()
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def audit_offset(self) -> int:
        return self.layout.audit_log.stat().st_size if self.layout.audit_log.exists() else 0

    def can(self, verb: str, group: str, resource: str, namespace: str, name: str = "") -> bool:
        sub, _, subresource = resource.partition("/")
        review = client.AuthorizationV1Api(self.api).create_subject_access_review(
            {
                "spec": {
                    "user": USER,
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{SYSTEM}",
                        "system:authenticated",
                    ],
                    "resourceAttributes": {
                        "verb": verb,
                        "group": group,
                        "resource": sub,
                        "subresource": subresource,
                        "namespace": namespace,
                        "name": name,
                    },
                }
            }
        )
        return bool(review.status.allowed)


def install_crd(api: client.ApiClient, layout: PrivateLayout) -> None:
    """Create the ModelDeployment CRD on a private control plane and return once clients can use it:
    Established, and the kind in the group's discovery document."""
    extensions = client.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(
        yaml.safe_load((REPO / "crds" / "modeldeploy.io_modeldeployments.yaml").read_text())
    )

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conditions = crd.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for("the CRD to be established", established, WAIT)

    def discovered() -> bool:
        # Established comes before the group's discovery document: under load /apis/<group>/<version>
        # still answered 404 right after Established (the cold CI run of 2026-12-04; CI run 57 of
        # 2026-12-06, in test_operator_namespace_deletion.py's own copy of this wait, since removed).
        try:
            return PLURAL in layout.admin_get(f"/apis/{GROUP}/{VERSION}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise

    wait_for("modeldeployments in discovery", discovered, WAIT)


@contextlib.contextmanager
def operator_plane(
    work: Path, audit_policy: dict[str, Any], admission_plugins: Sequence[str] = ("NodeRestriction",)
) -> Iterator[Plane]:
    """A private control plane with an audit log, a kwok node, the ModelDeployment CRD, the release
    namespace and the operator's ServiceAccount (no roles yet: `install`)."""
    with private_control_plane(
        work, admission_plugins=admission_plugins, audit_policy=audit_policy, kwok_nodes=1
    ) as layout:
        api = config.new_client_from_config(config_file=str(layout.admin_kubeconfig))
        install_crd(api, layout)
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": SYSTEM}})
        core.create_namespaced_service_account(SYSTEM, {"metadata": {"name": OPERATOR}})
        yield Plane(layout, api, work)
        api.close()


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """One private control plane for the session's tests of the operator under the chart's identity
    (RBAC, leader election: the "private-control-plane" xdist group, one worker), started on first use
    (about 30 s on a loaded machine). Each test installs the roles it needs and uses namespaces of its
    own; OwnerReferencesPermissionEnforcement is on (what makes `modeldeployments/finalizers` matter)."""
    work = Path(tmp_path_factory.mktemp("operator-plane"))
    with operator_plane(
        work, AUDIT_POLICY, admission_plugins=("NodeRestriction", "OwnerReferencesPermissionEnforcement")
    ) as plane:
        yield plane


def install(plane: Plane, docs: list[dict[str, Any]]) -> None:
    for doc in rbac_docs(docs):
        plane.apply(doc)


@contextlib.contextmanager
def operator_running(
    plane: Plane,
    docs: list[dict[str, Any]],
    label: str,
    pod: client.V1Pod | None = None,
    keep_lease: bool = False,
) -> Iterator[Process]:
    """The operator with the chart's environment and the chart ServiceAccount's token (bound to `pod`,
    whose name is then its POD_NAME, if given), its Lease deleted first (so that it creates it) unless
    `keep_lease`."""
    if not keep_lease:
        with contextlib.suppress(client.ApiException):
            client.CoordinationV1Api(plane.api).delete_namespaced_lease(OPERATOR, SYSTEM)
    env = operator_env(docs)
    if pod is not None:
        env["POD_NAME"] = pod.metadata.name
    env["KUBECONFIG"] = str(plane.kubeconfig(plane.work / f"{label}.kubeconfig", pod))
    binary = Path(sys.executable).parent / "modeldeploy-operator"
    process = Process([str(binary)], env, plane.work / f"operator-{label}.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()
