"""The informer caches (issue 16): list once, then watch; 410 Gone relists and reports what changed in
the gap; a broken watch restarts from the last resourceVersion after a backoff; reads by owner label;
our own writes kept unless the watch already brought a later version. Fake watch streams, no cluster."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from modeldeploy_operator.k8s.api import UNREACHABLE_RETRY_MAX_SECONDS, RejectedError, TransientApiError
from modeldeploy_operator.k8s.cache import (
    INDEX_LABEL,
    WATCH_RETRY_MAX_SECONDS,
    CachedKind,
    ClusterCache,
    Informer,
    newer,
    watch_backoff,
)

DEPLOYMENTS = CachedKind("apps/v1", "Deployment")


def obj(
    name: str, rv: int, owner: str | None = "churn", namespace: str = "ml", **extra: Any
) -> dict[str, Any]:
    labels = {INDEX_LABEL: owner} if owner else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(rv), "labels": labels},
        **extra,
    }


def event(kind: str, o: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": o}


class FakeSource:
    """Answers lists and watches from scripts; each watch script is a list of events, or an exception
    to raise when the watch is opened. When the scripts run out, `stop` is set (the informer ends)."""

    def __init__(self, lists: list[Any], watches: list[Any], stop: threading.Event) -> None:
        self.lists = lists
        self.watches = watches
        self.stop = stop
        self.calls: list[tuple[str, str]] = []

    def list_all(
        self, api_version: str, kind: str, namespace: str | None, selector: str, project: Any = None
    ) -> Any:
        self.calls.append(("list", ""))
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        items, rv = answer
        return [project(i) if project else i for i in items], rv

    def watch(
        self, api_version: str, kind: str, namespace: str | None, selector: str, rv: str, timeout: int
    ) -> Iterator[dict[str, Any]]:
        self.calls.append(("watch", rv))
        if not self.watches:
            self.stop.set()
            return iter(())
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        return iter(script)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, kind: CachedKind, event_type: str, o: dict[str, Any]) -> None:
        self.seen.append((event_type, o["metadata"]["name"]))


def run(
    lists: list[Any], watches: list[Any], caps: list[float] | None = None
) -> tuple[Informer, FakeSource, Recorder, list[int]]:
    """The informer run over the scripts; the failure counts its backoff was asked for (and, into
    `caps`, the cap of each)."""
    stop = threading.Event()
    source = FakeSource(lists, watches, stop)
    recorder = Recorder()
    backoffs: list[int] = []

    def backoff(failures: int, cap: float) -> float:
        if not stop.is_set():  # the scripts' end (an empty watch) is not part of the story
            backoffs.append(failures)
            if caps is not None:
                caps.append(cap)
        return 0.0

    informer = Informer(source, DEPLOYMENTS, None, recorder, backoff=backoff, refused_retry_seconds=0.0)
    informer.run(stop)  # in this thread: ends when the scripts run out
    return informer, source, recorder, backoffs


def names(informer: Informer, owner: str | None = "churn", namespace: str = "ml") -> list[str]:
    return [o["metadata"]["name"] for o in informer.objects(namespace, owner)]


def test_list_then_watch_add_modify_delete() -> None:
    informer, source, recorder, backoffs = run(
        [([obj("a", 1), obj("b", 2)], "10")],
        [
            [
                event("ADDED", obj("c", 11)),
                event("MODIFIED", obj("a", 12, spec={"replicas": 3})),
                event("DELETED", obj("b", 13)),
            ]
        ],
    )
    assert source.calls == [("list", ""), ("watch", "10"), ("watch", "13")]  # re-watched from the last
    assert names(informer) == ["a", "c"]
    assert informer.objects("ml", "churn")[0]["spec"] == {"replicas": 3}
    assert recorder.seen == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    assert informer.synced.is_set()
    assert backoffs == []  # a watch the server ends is restarted at once, not after a backoff


def test_the_index_follows_label_changes_and_namespaces() -> None:
    informer, *_ = run(
        [([obj("a", 1), obj("x", 2, owner="other"), obj("a", 3, namespace="ml2")], "10")],
        [[event("MODIFIED", obj("a", 11, owner="other"))]],
    )
    assert names(informer) == []
    assert names(informer, "other") == ["a", "x"]
    assert names(informer, "churn", "ml2") == ["a"]
    assert sorted(names(informer, None)) == ["a", "x"]  # the whole namespace


def test_bookmarks_move_the_resource_version_without_an_event() -> None:
    _, source, recorder, _ = run(
        [([obj("a", 1)], "10")],
        [[{"type": "BOOKMARK", "object": {"kind": "Deployment", "metadata": {"resourceVersion": "99"}}}]],
    )
    assert source.calls[-1] == ("watch", "99")
    assert recorder.seen == [("ADDED", "a")]


def test_gone_relists_and_reports_what_changed_in_the_gap() -> None:
    """410 as an ERROR event: list again; what was deleted, changed or added meanwhile is told."""
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}
    informer, source, recorder, backoffs = run(
        [
            ([obj("a", 1), obj("b", 2), obj("c", 3)], "10"),
            ([obj("a", 1), obj("c", 20), obj("d", 21)], "30"),
        ],
        [[gone]],
    )
    assert source.calls == [("list", ""), ("watch", "10"), ("list", ""), ("watch", "30")]
    assert names(informer) == ["a", "c", "d"]
    assert recorder.seen[3:] == [("DELETED", "b"), ("MODIFIED", "c"), ("ADDED", "d")]  # "a" unchanged: silent
    assert backoffs == []  # the first 410 relists at once


def test_gone_as_an_http_status_relists_too() -> None:
    informer, source, _, _ = run(
        [([obj("a", 1)], "10"), ([obj("b", 5)], "40")],
        [RejectedError(410, "WATCH: Gone")],
    )
    assert source.calls == [("list", ""), ("watch", "10"), ("list", ""), ("watch", "40")]
    assert names(informer) == ["b"]


def test_a_broken_watch_restarts_from_the_last_version_after_a_growing_backoff() -> None:
    informer, source, _, backoffs = run(
        [([obj("a", 1)], "10")],
        [
            [event("MODIFIED", obj("a", 11))],
            TransientApiError("connection reset"),
            TransientApiError("503"),
            [event("ADDED", obj("b", 12))],
        ],
    )
    # No relist: the resourceVersion is still good; the watch goes on from the last event seen.
    assert source.calls == [
        ("list", ""),
        ("watch", "10"),
        ("watch", "11"),
        ("watch", "11"),
        ("watch", "11"),
        ("watch", "12"),
    ]
    assert backoffs == [1, 2]  # two failures in a row: a growing backoff
    assert names(informer) == ["a", "b"]


def test_a_watch_that_ends_at_once_with_nothing_backs_off_instead_of_looping() -> None:
    _, source, _, backoffs = run([([obj("a", 1)], "10")], [[], [], [event("ADDED", obj("b", 11))]])
    assert backoffs == [1, 2]
    assert source.calls[-1] == ("watch", "11")


def test_a_failed_first_list_is_retried_after_a_backoff() -> None:
    informer, source, _, backoffs = run(
        [TransientApiError("connection refused"), ([obj("a", 1)], "10")],
        [],
    )
    assert [c[0] for c in source.calls] == ["list", "list", "watch"]
    assert backoffs == [1]
    assert names(informer) == ["a"]


def test_a_refused_list_is_remembered_and_raised_on_reads() -> None:
    """HTTPRoutes without the Gateway API (403/404): reads raise the refusal, as the LIST did."""

    class StopAfterRefusal(threading.Event):
        """The informer's first wait (its pause after the refusal) ends the run."""

        def wait(self, timeout: float | None = None) -> bool:
            self.set()
            return True

    stop = StopAfterRefusal()
    source = FakeSource([RejectedError(404, "no such resource")], [], stop)
    routes = CachedKind("gateway.networking.k8s.io/v1", "HTTPRoute")
    cache = ClusterCache(source, [routes], ["ml"])
    informer = cache.informers[(routes.api_version, routes.kind, "ml")]
    informer.run(stop)
    assert informer.synced.is_set()
    with pytest.raises(RejectedError) as raised:
        cache.list(routes.api_version, routes.kind, "ml", f"{INDEX_LABEL}=churn")
    assert raised.value.status == 404


def test_a_list_refused_until_a_permission_is_granted_heals_after_a_growing_backoff() -> None:
    """403 (a permission missing when the operator started): asked again after 1, 2, ... s (at most
    `refused_retry_seconds`, not a fixed five minutes), and reads work once a list is allowed."""
    forbidden = RejectedError(403, "services is forbidden")
    informer, source, recorder, backoffs = run([forbidden, forbidden, ([obj("a", 1)], "10")], [])
    assert [c[0] for c in source.calls] == ["list", "list", "list", "watch"]
    assert backoffs == [1, 2]
    assert informer.refused is None
    assert names(informer) == ["a"]
    assert recorder.seen == [("ADDED", "a")]


def test_a_refusal_is_asked_again_within_the_cap() -> None:
    stop = threading.Event()
    source = FakeSource([RejectedError(404, "no such resource")], [], stop)
    waits: list[float | None] = []

    class Recording(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            self.set()
            return True

    informer = Informer(
        source, DEPLOYMENTS, None, None, backoff=lambda n, cap: min(cap, 3600.0), refused_retry_seconds=60.0
    )
    informer.run(Recording())
    assert waits == [60.0]


# -- an API server that cannot be reached: retried every few seconds --------------------------------


def unreachable() -> TransientApiError:
    return TransientApiError("WATCH x: connection refused", unreachable=True)


def test_while_no_api_server_answers_the_backoff_is_capped_short_and_counted_apart() -> None:
    """Connection refused (the API server down): 1, 2, 4, 4, ... s, not up to 60 s, so the cache is
    watching again within seconds of the server's return; the server's first answers after it (a 503
    while it starts) begin a count of their own, capped at 60 s as before."""
    caps: list[float] = []
    down = [unreachable() for _ in range(6)]
    starting = [TransientApiError("WATCH x: 503 starting"), TransientApiError("WATCH x: 503 starting")]
    _, source, recorder, backoffs = run(
        [([obj("a", 1)], "10")], [*down, *starting, [event("ADDED", obj("b", 11))]], caps
    )
    assert backoffs == [1, 2, 3, 4, 5, 6, 1, 2]
    assert caps == [UNREACHABLE_RETRY_MAX_SECONDS] * 6 + [WATCH_RETRY_MAX_SECONDS] * 2
    assert source.calls[:-1] == [("list", "")] + [("watch", "10")] * 9  # from where it was, no relist
    assert recorder.seen[-1] == ("ADDED", "b")


@pytest.mark.parametrize("cap", [UNREACHABLE_RETRY_MAX_SECONDS, WATCH_RETRY_MAX_SECONDS])
def test_the_watch_backoff_doubles_up_to_its_cap_with_jitter(cap: float) -> None:
    for failures in range(1, 30):
        nominal = min(cap, 2.0 ** (failures - 1))
        assert 0.8 * nominal <= watch_backoff(failures, cap) <= 1.2 * nominal


def test_our_writes_are_kept_unless_the_watch_brought_a_later_version() -> None:
    informer, *_ = run([([obj("a", 5)], "10")], [])
    informer.remember(obj("a", 7, spec={"replicas": 2}))
    assert informer.objects("ml", "churn")[0]["spec"] == {"replicas": 2}
    informer.remember(obj("a", 6, spec={"replicas": 9}))  # older than what is kept: ignored
    assert informer.objects("ml", "churn")[0]["spec"] == {"replicas": 2}
    informer.remember(obj("new", 8))
    assert names(informer) == ["a", "new"]


@pytest.mark.parametrize(
    ("candidate", "current", "is_newer"),
    [("11", "9", True), ("9", "11", False), ("9", "9", False), ("abc", "9", True), ("9", "", True)],
)
def test_newer(candidate: str, current: str, is_newer: bool) -> None:
    assert newer(candidate, current) is is_newer


class Fallback:
    def __init__(self) -> None:
        self.calls = 0

    def list(self, *args: Any) -> list[dict[str, Any]]:
        self.calls += 1
        return []


def test_reads_come_from_the_cache_once_listed_and_from_the_api_before() -> None:
    stop = threading.Event()
    source = FakeSource([([obj("a", 1), obj("b", 2, owner="other")], "10")], [], stop)
    fallback = Fallback()
    cache = ClusterCache(source, [DEPLOYMENTS], (), fallback=fallback)
    selector = f"{INDEX_LABEL}=churn"
    assert cache.list("apps/v1", "Deployment", "ml", selector) == []  # not listed yet: asked of the API
    assert fallback.calls == 1
    cache.informers[("apps/v1", "Deployment", None)].run(stop)
    assert [o["metadata"]["name"] for o in cache.list("apps/v1", "Deployment", "ml", selector)] == ["a"]
    assert len(cache.list("apps/v1", "Deployment", "ml", "")) == 2
    cache.list("v1", "Secret", "ml", "")  # a kind not cached: the API
    assert fallback.calls == 2
    cache.remember(obj("c", 3))
    assert [o["metadata"]["name"] for o in cache.list("apps/v1", "Deployment", "ml", selector)] == ["a", "c"]


def test_a_namespaced_cache_has_one_informer_per_namespace() -> None:
    cache = ClusterCache(FakeSource([], [], threading.Event()), [DEPLOYMENTS], ["ml", "ml2"])
    scopes = [scope for (_, _, scope) in cache.informers]
    assert len(scopes) == 2
    assert set(scopes) == {"ml", "ml2"}
    cluster = ClusterCache(FakeSource([], [], threading.Event()), [DEPLOYMENTS])
    assert list(cluster.informers) == [("apps/v1", "Deployment", None)]


@pytest.mark.parametrize(
    ("method", "path", "watch", "verb", "resource"),
    [
        ("GET", "/apis/apps/v1/namespaces/ml/deployments", False, "list", "deployments"),
        ("GET", "/apis/apps/v1/namespaces/ml/deployments", True, "watch", "deployments"),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/s/leases/md", False, "get", "leases"),
        ("PATCH", "/apis/modeldeploy.io/v1alpha1/namespaces/ml/modeldeployments/c/status", False, "patch",
         "modeldeployments"),
        ("POST", "/api/v1/namespaces/ml/events", False, "create", "events"),
        ("GET", "/api/v1/pods", False, "list", "pods"),
    ],
)  # fmt: skip
def test_every_request_is_counted_by_verb_and_resource(
    method: str, path: str, watch: bool, verb: str, resource: str
) -> None:
    from modeldeploy_operator.k8s.api import API_REQUESTS, _count

    before = API_REQUESTS.labels(verb, resource)._value.get()
    _count(method, path, watch)
    assert API_REQUESTS.labels(verb, resource)._value.get() == before + 1


# -- KubeApi's list and watch over real HTTP (a local server streaming chunked watch events) --------


class _Server:
    """127.0.0.1 HTTP server: pages of a list, then a chunked watch stream, or a 410 status."""

    def __init__(self, watch_status: int = 200) -> None:
        import http.server
        import json

        self.requests: list[str] = []
        self.release = threading.Event()
        """The watch stream stays open (events sent, no end) until this is set."""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if "watch=true" in self.path:
                    if watch_status != 200:
                        body = json.dumps(
                            {"kind": "Status", "code": watch_status, "message": "too old"}
                        ).encode()
                        self.send_response(watch_status)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    events = [
                        {"type": "ADDED", "object": obj("c", 11)},
                        {"type": "DELETED", "object": obj("a", 12)},
                    ]
                    data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
                    for piece in (data[:30], data[30:]):  # an event split across chunks
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        self.wfile.flush()
                    outer.release.wait(60)
                    self.wfile.write(b"0\r\n\r\n")
                    return
                second = "continue=page2" in self.path
                items = [obj("b", 2)] if second else [obj("a", 1)]
                meta = {"resourceVersion": "10"} if second else {"continue": "page2"}
                body = json.dumps({"items": items, "metadata": meta}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def api(self) -> Any:
        from kubernetes import client

        from modeldeploy_operator.k8s.api import USER_AGENT, KubeApi

        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        api_client = client.ApiClient(configuration)
        api_client.user_agent = USER_AGENT
        return KubeApi(api_client, "modeldeploy-operator")

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_kube_api_lists_page_by_page_and_streams_a_watch() -> None:
    server = _Server()
    try:
        api = server.api()
        items, rv = api.list_all("apps/v1", "Deployment", "ml", INDEX_LABEL)
        assert [i["metadata"]["name"] for i in items] == ["a", "b"]
        assert rv == "10"
        stream = api.watch("apps/v1", "Deployment", "ml", INDEX_LABEL, rv, 300)
        events = [next(stream), next(stream)]  # delivered as they come, the stream still open
        assert not server.release.is_set()
        server.release.set()
        assert list(stream) == []
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "c"),
            ("DELETED", "a"),
        ]
        watch = server.requests[-1]
        for part in ("watch=true", "resourceVersion=10", "allowWatchBookmarks=true"):
            assert part in watch
    finally:
        server.close()


def test_each_request_of_the_client_is_timed_by_verb() -> None:
    from modeldeploy_operator.k8s.api import API_REQUEST_SECONDS

    def timed() -> float:
        return next(
            s.value
            for m in API_REQUEST_SECONDS.collect()
            for s in m.samples
            if s.name.endswith("_count") and s.labels == {"verb": "list"}
        )

    API_REQUEST_SECONDS.labels("list")
    before = timed()
    server = _Server()
    try:
        server.api().list_all("apps/v1", "Deployment", "ml", INDEX_LABEL)  # two pages: two requests
    finally:
        server.close()
    assert timed() == before + 2


def test_kube_api_raises_gone_on_a_410_watch() -> None:
    server = _Server(watch_status=410)
    try:
        with pytest.raises(RejectedError) as raised:
            list(server.api().watch("apps/v1", "Deployment", "ml", INDEX_LABEL, "1", 300))
        assert raised.value.status == 410
    finally:
        server.close()


# -- what the store keeps ----------------------------------------------------------------------------

OURS_APPLY = {
    "manager": "modeldeploy-operator",
    "operation": "Apply",
    "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {}}}},
}
STATUS_UPDATE = {
    "manager": "kube-controller-manager",
    "operation": "Update",
    "subresource": "status",
    "fieldsV1": {"f:status": {"f:readyReplicas": {}}},
}


def test_the_store_keeps_of_managed_fields_only_who_applies_replicas() -> None:
    """managedFields are about half of each cached object (RSS at N = 1,000); the store keeps only what
    the replicas handover reads, and the handover decides the same from the slim copy."""
    from modeldeploy_operator.domain.manifests import build_replicas_handover

    with_replicas = obj("a", 3, spec={"replicas": 2})
    with_replicas["metadata"]["managedFields"] = [OURS_APPLY, STATUS_UPDATE]
    handed_over = obj("b", 4, spec={"replicas": 2})
    handed_over["metadata"]["managedFields"] = [
        {"manager": "modeldeploy-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}},
        STATUS_UPDATE,
    ]
    informer, _, _, _ = run([([with_replicas, handed_over], "5")], [])
    a, b = informer.objects("ml")
    assert a["metadata"]["managedFields"] == [
        {"manager": "modeldeploy-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    ]
    assert "managedFields" not in b["metadata"]
    assert a["spec"] == {"replicas": 2}
    assert a["metadata"]["labels"] == with_replicas["metadata"]["labels"]
    assert with_replicas["metadata"]["managedFields"] == [OURS_APPLY, STATUS_UPDATE]  # input left as it is
    desired = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "a", "namespace": "ml"},
        "spec": {},
    }
    for full, kept in ((with_replicas, a), (handed_over, b)):
        assert build_replicas_handover(desired, kept, "modeldeploy-operator") == build_replicas_handover(
            desired, full, "modeldeploy-operator"
        )
    assert build_replicas_handover(desired, a, "modeldeploy-operator") is not None


# -- the echo of our own writes -------------------------------------------------------------------------


def listening(lists: list[Any]) -> tuple[Informer, Recorder]:
    informer, _, recorder, _ = run(lists, [])
    recorder.seen.clear()
    return informer, recorder


def test_the_echo_of_our_own_write_is_kept_but_not_told() -> None:
    informer, recorder = listening([([obj("a", 5)], "10")])
    informer.remember(obj("a", 11, spec={"replicas": 2}))  # what our apply returned
    informer._apply(event("MODIFIED", obj("a", 11, spec={"replicas": 2})))  # its watch event
    assert recorder.seen == []
    assert informer.echoes == 1
    assert len(informer.own) == 0  # nothing left behind
    informer._apply(event("MODIFIED", obj("a", 12, spec={"replicas": 3})))  # someone else's change
    assert recorder.seen == [("MODIFIED", "a")]
    assert informer.objects("ml", "churn")[0]["spec"] == {"replicas": 3}


def test_every_event_that_is_not_our_write_is_told() -> None:
    informer, recorder = listening([([obj("a", 5)], "10")])
    informer.remember(obj("a", 13, spec={"replicas": 2}))  # our apply, on top of a change we had not seen
    informer._apply(event("MODIFIED", obj("a", 12, spec={"replicas": 1}, status={"ready": 1})))
    # Told (someone else's), but the copy our write returned stays: it is later and holds that change.
    assert recorder.seen == [("MODIFIED", "a")]
    assert informer.objects("ml", "churn")[0]["metadata"]["resourceVersion"] == "13"
    informer._apply(event("MODIFIED", obj("a", 13, spec={"replicas": 2})))  # our echo
    assert recorder.seen == [("MODIFIED", "a")]
    informer._apply(event("MODIFIED", obj("a", 14)))
    informer._apply(event("DELETED", obj("a", 15)))
    assert recorder.seen == [("MODIFIED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert names(informer) == []


def test_the_handover_and_the_apply_of_one_pass_are_both_ours() -> None:
    informer, recorder = listening([([obj("a", 5)], "10")])
    informer.remember(obj("a", 11))  # the replicas handover
    informer.remember(obj("a", 12))  # then the apply
    for rv in (11, 12):
        informer._apply(event("MODIFIED", obj("a", rv)))
    assert recorder.seen == []
    assert len(informer.own) == 0


def test_an_echo_a_relist_skipped_is_forgotten_and_a_later_one_kept() -> None:
    informer, source, recorder, _ = run([([obj("a", 5), obj("b", 6)], "10")], [])
    recorder.seen.clear()
    informer.remember(obj("a", 11))
    informer.remember(obj("b", 14))
    source.lists = [([obj("a", 11), obj("b", 6)], "12")]  # a 410, then a list at 12
    informer.relist()
    # a: the version we hold, not a change; b: the list replaces our later copy with its own (told:
    # one pass too many, never one too few).
    assert recorder.seen == [("MODIFIED", "b")]
    assert len(informer.own) == 1  # a's echo (11) will not come after a list at 12; b's (14) will
    informer._apply(event("MODIFIED", obj("b", 14)))
    assert recorder.seen == [("MODIFIED", "b")]
    assert informer.objects("ml", "churn")[1]["metadata"]["resourceVersion"] == "14"


def test_a_deletion_is_told_even_right_after_our_write() -> None:
    informer, recorder = listening([([obj("a", 5)], "10")])
    informer.remember(obj("a", 11))
    informer._apply(event("DELETED", obj("a", 12)))
    assert recorder.seen == [("DELETED", "a")]
    assert len(informer.own) == 0
    # Our write re-created it after a deletion whose event comes late: the new copy stays.
    informer.remember(obj("a", 20))
    informer._apply(event("DELETED", obj("a", 19)))
    assert names(informer) == ["a"]
    informer._apply(event("ADDED", obj("a", 20)))
    assert recorder.seen == [("DELETED", "a"), ("DELETED", "a")]


def test_versions_that_are_not_revisions_let_the_event_win() -> None:
    informer, recorder = listening([([obj("a", 5)], "10")])
    odd = obj("a", 0, spec={"replicas": 2})
    odd["metadata"]["resourceVersion"] = "x-1"
    informer._apply(event("MODIFIED", odd))
    assert informer.objects("ml", "churn")[0]["spec"] == {"replicas": 2}
    assert recorder.seen == [("MODIFIED", "a")]


def test_the_echoes_are_counted_by_kind() -> None:
    from prometheus_client import REGISTRY

    def counted() -> float:
        value = REGISTRY.get_sample_value(
            "modeldeploy_operator_own_write_echoes_total", {"kind": "Deployment"}
        )
        return value or 0.0

    informer, _ = listening([([obj("a", 5)], "10")])
    before = counted()
    informer.remember(obj("a", 11))
    informer._apply(event("MODIFIED", obj("a", 11)))
    informer._apply(event("MODIFIED", obj("a", 12)))  # someone else's: not an echo
    assert counted() - before == 1
