"""KubeClient's watch and errors, with the official client's Watch and API replaced by fakes: a watch
resumes from the last resourceVersion when the server closes it, starts afresh on 410 Gone, ends at
its timeout; 404 is NotFoundError, other refusals ApiError."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from modeldeploy_kubectl.client import ApiError, KubeClient, NotFoundError

from plugin_fakes import canary_body


def obj(version: str, weight: int = 20) -> dict[str, Any]:
    body = canary_body()
    body["metadata"]["resourceVersion"] = version
    body["status"]["canaryWeight"] = weight
    return body


class FakeWatch:
    """Each stream() call plays the next script: a list of events, or an exception to raise."""

    scripts: ClassVar[list[Any]] = []
    calls: ClassVar[list[dict[str, Any]]] = []

    def stream(self, func: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        FakeWatch.calls.append(kwargs)
        script = FakeWatch.scripts.pop(0) if FakeWatch.scripts else []
        if isinstance(script, Exception):
            raise script
        yield from script


class FakeCustom:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("called through the fake Watch only")

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        if self.error:
            raise self.error
        return obj("1")


def kube(custom: FakeCustom | None = None) -> KubeClient:
    made = KubeClient.__new__(KubeClient)
    made._custom = custom or FakeCustom()
    made._core = None
    made._exception = k8s.ApiException
    return made


@pytest.fixture(autouse=True)
def fake_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeWatch.scripts, FakeWatch.calls = [], []
    monkeypatch.setattr(k8s_watch, "Watch", FakeWatch)


def test_a_closed_watch_resumes_from_the_last_resource_version() -> None:
    FakeWatch.scripts = [
        [{"type": "ADDED", "object": obj("5")}, {"type": "MODIFIED", "object": obj("6", 50)}],
        [{"type": "MODIFIED", "object": obj("9", 60)}],
    ]
    seen = []
    for kind, body in kube().watch("ml", "churn", timeout=None):
        seen.append((kind, body["status"]["canaryWeight"]))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", 20), ("MODIFIED", 50), ("MODIFIED", 60)]
    assert FakeWatch.calls[0]["field_selector"] == "metadata.name=churn"
    assert "resource_version" not in FakeWatch.calls[0]
    assert FakeWatch.calls[1]["resource_version"] == "6"
    assert FakeWatch.calls[0]["timeout_seconds"] == 300


def test_gone_starts_afresh() -> None:
    FakeWatch.scripts = [
        [{"type": "ADDED", "object": obj("5")}],
        [{"type": "ERROR", "object": {"code": 410, "message": "too old"}}],
        k8s.ApiException(status=410, reason="Gone"),
        [{"type": "ADDED", "object": obj("20", 70)}],
    ]
    seen = []
    for _, body in kube().watch("ml", "churn", timeout=None):
        seen.append(body["metadata"]["resourceVersion"])
        if len(seen) == 2:
            break
    assert seen == ["5", "20"]
    assert [c.get("resource_version") for c in FakeWatch.calls] == [None, "5", None, None]


def test_a_watch_ends_at_its_timeout() -> None:
    FakeWatch.scripts = [[{"type": "ADDED", "object": obj("5")}]]
    events = list(kube().watch("ml", "churn", timeout=0.01))
    assert [k for k, _ in events] == ["ADDED"]
    assert FakeWatch.calls[0]["timeout_seconds"] == 1  # the server's timeout is whole seconds


def test_watch_errors() -> None:
    FakeWatch.scripts = [[{"type": "ERROR", "object": {"code": 500, "message": "boom"}}]]
    with pytest.raises(ApiError, match="watch: boom"):
        list(kube().watch("ml", "churn", timeout=5))
    FakeWatch.scripts = [k8s.ApiException(status=403, reason="Forbidden")]
    with pytest.raises(ApiError, match="403 Forbidden"):
        list(kube().watch("ml", "churn", timeout=5))


def test_get_errors() -> None:
    with pytest.raises(NotFoundError, match='modeldeployment "churn" not found in namespace "ml"'):
        kube(FakeCustom(k8s.ApiException(status=404, reason="Not Found"))).get("ml", "churn")
    with pytest.raises(ApiError, match="API server: 403 Forbidden"):
        kube(FakeCustom(k8s.ApiException(status=403, reason="Forbidden"))).get("ml", "churn")
    assert kube().get("ml", "churn")["metadata"]["name"] == "churn"


def test_default_namespace_of_a_missing_kubeconfig_is_default(tmp_path: Any) -> None:
    assert KubeClient.default_namespace(str(tmp_path / "none"), None) == "default"


def test_a_kubeconfig_with_a_namespace(tmp_path: Any) -> None:
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: a, context: {cluster: c, user: u, namespace: ml}},"
        " {name: b, context: {cluster: c, user: u}}]\n"
    )
    assert KubeClient.default_namespace(str(config), None) == "ml"
    assert KubeClient.default_namespace(str(config), "b") == "default"
