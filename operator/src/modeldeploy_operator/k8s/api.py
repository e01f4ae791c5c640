"""Thin, typed-enough calls on the official client: server-side apply, list, delete, status, Events.

Errors are sorted once, here, into the two kinds the handlers act on: `TransientApiError` (conflicts,
throttling, 5xx, connection trouble: retry with backoff) and `RejectedError` (the API server refused
what we sent: no point retrying the same thing).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import urllib3
from kubernetes import client, config
from prometheus_client import Counter, Histogram

from modeldeploy_contract.redact import scrub
from modeldeploy_operator.k8s.kinds import KINDS, Kind, kind_of

API_REQUESTS = Counter(
    "modeldeploy_operator_api_requests_total",
    "Requests this operator's client sent to the API server (kopf's own watch of ModelDeployments aside).",
    ["verb", "resource"],
)
API_REQUEST_SECONDS = Histogram(
    "modeldeploy_operator_api_request_duration_seconds",
    "Wall time of one request of this operator's client, from sending it to its body read and the GIL "
    "held again (client-go's rest_client_request_duration_seconds), by verb.",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_PLURALS = {k.plural for k in KINDS.values()} | {"events"}


def _count(method: str, path: str, watch: bool = False) -> str:
    """One request in API_REQUESTS: verb as the API server names it (returned), resource by its plural."""
    parts = [p for p in path.split("/") if p]
    resource = next((p for p in reversed(parts) if p in _PLURALS), "other")
    verb = {"PATCH": "patch", "POST": "create", "PUT": "update", "DELETE": "delete"}.get(method)
    if verb is None:
        verb = "watch" if watch else ("list" if parts and parts[-1] == resource else "get")
    API_REQUESTS.labels(verb, resource).inc()
    return verb


def _version() -> str:
    try:
        return version("modeldeploy-operator")
    except PackageNotFoundError:  # a source checkout without the package metadata
        return "0.0.0"


USER_AGENT = f"modeldeploy-operator/{_version()}"
"""Every request of the operator (ours and kopf's) carries it, so the API server's
apiserver_request_total{userAgent=~"modeldeploy-operator.*"} is the operator's cost alone."""
LIST_PAGE_SIZE = 100
"""Objects per page of a cache's list. Each page is parsed whole before the cache keeps its projection
(k8s/projection.py), and every cached kind lists at once on its own thread at start-up: what they hold
together is the operator's memory peak, which its RSS keeps after (Python's allocator hands back few of
the freed pages). 500 a page was up to 16 MB of parsed pods per thread (33 kB each in Python); 100 is
15 requests for 1,500 pods at start-up instead of 3."""

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"
_TRANSIENT_STATUSES = {409, 429, 500, 502, 503, 504}


MAX_RETRY_AFTER_SECONDS = 300.0
"""A server asking for a longer pause is believed up to this (a bogus header cannot park us for a day)."""


UNREACHABLE_RETRY_MAX_SECONDS = 4.0
"""Longest pause between attempts while no API server answers at all (connection refused or reset, a
timeout). Such an attempt costs the API server nothing, and the pause is how late we notice it is back:
with the 60 s cap of answered errors, the operator acted on a spec change 81-95 s after an API server
down for 30-120 s came back (docs/reliability.md, "the API server down")."""


def backoff(failures: int, cap: float, first: float = 1.0, jitter: float = 0.0) -> float:
    """The pause after `failures` failures in a row: first, 2 first, 4 first, ... up to `cap`, times a
    random factor in [1 - jitter, 1 + jitter] (callers that retry together do not stay in step). The one
    backoff of the operator: informer watches and lists, reconcile retries, kopf's requests; each
    passes its cap (UNREACHABLE_RETRY_MAX_SECONDS while no API server answers)."""
    delay = min(cap, first * 2.0 ** max(0, failures - 1))
    if jitter:
        delay *= random.uniform(1.0 - jitter, 1.0 + jitter)  # noqa: S311 - jitter, not cryptography
    return float(delay)


class TransientApiError(RuntimeError):
    """The call may succeed if retried later; `retry_after`: the server's own Retry-After, if any;
    `unreachable`: no API server answered (connection refused or broken, a timeout), so retrying soon
    costs it nothing (UNREACHABLE_RETRY_MAX_SECONDS)."""

    def __init__(self, message: str, retry_after: float | None = None, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable


def retry_cap(error: TransientApiError, cap: float) -> float:
    """The longest pause before retrying after `error`: `cap`, or less while no API server answers."""
    return min(cap, UNREACHABLE_RETRY_MAX_SECONDS) if error.unreachable else cap


def retry_after_of(headers: Any, data: bytes | str | None) -> float | None:
    """Seconds from a 429/503's `Retry-After` header (delta-seconds), else from the Status body's
    details.retryAfterSeconds; None without either. Bounded to [0, MAX_RETRY_AFTER_SECONDS]."""
    raw: Any = None
    with contextlib.suppress(AttributeError, TypeError):
        raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            raw = (json.loads(data or b"").get("details") or {}).get("retryAfterSeconds")
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date (the API server sends seconds)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class FencedError(TransientApiError):
    """A write not sent: the leadership term it was made for is over (k8s/leader.py). Transient, so a
    reconcile gives up quietly; the lease thread stops that term's reconciles at its next check."""


class WriteFence(Protocol):
    """What the writes check (k8s/leader.py's LeaderElector): leadership comes in numbered terms."""

    @property
    def term(self) -> int:
        """The current term, or the last one if it is over (0 before the first)."""
        ...

    def holds(self, term: int) -> bool:
        """True while `term` is the current term and its deadline has not passed."""
        ...


_write_fence: WriteFence | None = None
"""While set (by main, to the leader elector), every write of a fenced KubeApi asks it first."""


def fence_writes(fence: WriteFence | None) -> None:
    """Make every write of a fenced KubeApi conditional on `fence.holds(<the term the KubeApi was made
    in>)` (None: no fence, no election)."""
    global _write_fence  # noqa: PLW0603 - one leadership per process, installed once at start
    _write_fence = fence


class RejectedError(RuntimeError):
    """The API server refused the request; retrying it unchanged will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NamespaceTerminatingError(RejectedError):
    """A create refused because the namespace is being deleted (the NamespaceLifecycle admission's
    403, with the Status cause `NamespaceTerminating`). The namespace never becomes active again: its
    deletion removes everything in it, the ModelDeployment too, so nothing should be re-created there."""


NAMESPACE_TERMINATING_CAUSE = "NamespaceTerminating"
"""core/v1 NamespaceTerminatingCause: the Status cause type of that refusal."""


def _body_message(data: bytes | str | None, reason: str | None) -> str:
    try:
        return str(json.loads(data or b"").get("message", reason))
    except (TypeError, ValueError, AttributeError):
        return str(reason)


def namespace_terminating(status: int, data: bytes | str | None) -> bool:
    """Whether a refusal's Status body says the namespace is being deleted: a 403 whose
    details.causes name `NamespaceTerminating` (a StatusCause's type is its JSON field "reason"; seen
    from kube-apiserver v1.34.4: `{"reason": "NamespaceTerminating", "message": "namespace x is being
    terminated", "field": "metadata.namespace"}`). The message alone is not relied on."""
    if status != 403:
        return False
    try:
        causes = (json.loads(data or b"").get("details") or {}).get("causes") or []
    except (TypeError, ValueError, AttributeError):
        return False
    return isinstance(causes, list) and any(
        isinstance(c, dict) and c.get("reason") == NAMESPACE_TERMINATING_CAUSE for c in causes
    )


def _message(error: client.ApiException) -> str:
    return _body_message(error.body, error.reason)


CONNECTION_POOL_SIZE = 32
"""Connections to the API server kept open for reuse. The client's default is 5 per CPU (10 on a 2-core
node), but one client serves every informer's watch (a dozen kinds, each holding a connection while it
streams), the reconcile workers and the apply pool (reconciler.APPLY_THREADS): with 10, a connection
handed back to a full pool was closed (urllib3's "Connection pool is full, discarding connection",
19 times in a bench run of 10 new ModelDeployments) and the next write paid a new TLS handshake."""


CONNECT_TIMEOUT_SECONDS = 5.0
"""How long a call may wait to connect to the API server before it counts as unreachable (and the
caller's backoff, UNREACHABLE_RETRY_MAX_SECONDS, takes over). Why not 30 s: in a cluster the operator
connects through the `kubernetes` Service, and while it has no endpoint (the API server empties it
when it shuts down, and kube-proxy re-points it only after its own watch backs off) kube-proxy rejects
connections with an ICMP reply that the kernel rate-limits: of 20 connects at once 4 were refused and
16 hung until their timeout (2026-12-06, from a pod's network namespace, the API-server-down e2e
test). With 30 s, times urllib3's 3 immediate retries of a failed connect, a call could sit 2 minutes
after the Service worked again; an answer from a live API server, even a loaded one, takes a TCP
handshake, milliseconds."""


def new_api_client() -> client.ApiClient:
    """An API client from the in-cluster config (else the kubeconfig), identified by USER_AGENT."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    # A failed connect is not retried at once by urllib3 (its default: 3 times, no pause): the caller
    # backs off and asks again (CONNECT_TIMEOUT_SECONDS). Other failures are retried as before.
    configuration.retries = urllib3.Retry(total=3, connect=0)
    api_client = client.ApiClient(configuration)
    api_client.user_agent = USER_AGENT
    return api_client


class KubeApi:
    """The operator's window on the API server."""

    def __init__(self, api_client: client.ApiClient, field_manager: str, fenced: bool = True) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self.fenced = fenced
        """Writes are refused once leadership has lapsed (`fence_writes`); False only for the Lease's
        own client (a lapsed leader may still release it)."""
        self.term = _write_fence.term if fenced and _write_fence is not None else None
        """The leadership term this client writes for (the one current when it was made: each term
        builds its controller anew, handlers.start). Its writes are refused once that term is over,
        even while a later term holds: a reconcile of an earlier term that is still running when the
        process leads again must not write with the new term's right. None: made before any fence
        was installed, refused once one is."""

    def _may_write(self) -> bool:
        if not self.fenced or _write_fence is None:
            return True
        return self.term is not None and _write_fence.holds(self.term)

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        method_, url, headers, payload, post = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        # Checked last before sending, so that a paused leader that wakes up finds it closed (its clock
        # ran on) before any of its queued writes leaves.
        if method != "GET" and not self._may_write():
            raise FencedError(
                f"{method} {path}: not sent, this replica no longer holds the leader lease (term {self.term})"
            )
        verb = _count(method, path)
        sent = time.perf_counter()
        try:
            response = self.api_client.call_api(
                method_,
                url,
                header_params=headers,
                body=payload,
                post_params=post,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, 30),
            )
            data = response.read()
            API_REQUEST_SECONDS.labels(verb).observe(time.perf_counter() - sent)
        except client.ApiException as error:
            status, message = error.status or 0, _message(error)
            retry_after = retry_after_of(error.headers, error.body)
            refusal = error.body
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransientApiError(scrub(f"{method} {path}: {error}"), unreachable=True) from error
        else:
            if 200 <= response.status < 300:
                return json.loads(data) if data else None
            status, message = response.status, _body_message(data, response.reason)
            retry_after = retry_after_of(response.headers, data)
            refusal = data
        # The API server may quote what it refused (a model URI in an env value): these messages go to
        # status, Events and logs, so without credentials.
        if status in _TRANSIENT_STATUSES:
            raise TransientApiError(scrub(f"{method} {path}: {status} {message}"), retry_after)
        if namespace_terminating(status, refusal):
            raise NamespaceTerminatingError(status, scrub(f"{method} {path}: {message}"))
        raise RejectedError(status, scrub(f"{method} {path}: {message}"))

    # -- objects ------------------------------------------------------------------------------
    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        """Server-side apply with our field manager (or `field_manager`: the replicas handover),
        taking ownership of the fields we set."""
        kind = kind_of(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        result: dict[str, Any] = self._call(
            "PATCH",
            kind.object_path(meta.get("namespace"), meta["name"]),
            query=[("fieldManager", field_manager or self.field_manager), ("force", "true")],
            body=manifest,  # sent as JSON, which is valid YAML for the apply content type
            content_type=APPLY_CONTENT_TYPE,
        )
        return result

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Plain create: only for objects whose creation must fail when they exist (a Lease claim)."""
        kind = kind_of(manifest["apiVersion"], manifest["kind"])
        result: dict[str, Any] = self._call(
            "POST", kind.collection_path(manifest["metadata"].get("namespace")), body=manifest
        )
        return result

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """PUT with the object's resourceVersion: fails with a conflict if someone wrote in between."""
        kind = kind_of(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        result: dict[str, Any] = self._call(
            "PUT", kind.object_path(meta.get("namespace"), meta["name"]), body=manifest
        )
        return result

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call(
                "GET", kind_of(api_version, kind).object_path(namespace, name)
            )
        except RejectedError as error:
            if error.status == 404:
                return None
            raise
        return result

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        path = kind_of(api_version, kind).collection_path(namespace)
        result = self._call("GET", path, query=[("labelSelector", label_selector)])
        items: list[dict[str, Any]] = result.get("items", [])
        for item in items:  # list items lack these; manifests compared later expect them
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def list_all(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str,
        project: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """Every matching object, page by page, and the list's resourceVersion (a watch starts there).
        With `project`, each page's objects are kept as it makes them before the next page is asked:
        the whole list never exists at once (at N = 1,000, 1,500 pods of 33 kB each in Python)."""
        path = kind_of(api_version, kind).collection_path(namespace)
        items: builtins.list[dict[str, Any]] = []
        token = ""
        while True:
            query = [("labelSelector", label_selector), ("limit", str(LIST_PAGE_SIZE))]
            if token:
                query.append(("continue", token))
            result = self._call("GET", path, query=query)
            for item in result.get("items", []):
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                items.append(project(item) if project is not None else item)
            meta = result.get("metadata") or {}
            del result  # (the page as parsed: let it go before the next one comes)
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int,
    ) -> Iterator[dict[str, Any]]:
        """The watch events (`{"type": ..., "object": ...}`) after `resource_version`, with bookmarks,
        until the server ends the watch (after about `timeout_seconds`). An HTTP error is raised as in
        every other call (410 Gone: a RejectedError with status 410); a broken stream as transient."""
        path = kind_of(api_version, kind).collection_path(namespace)
        query = [
            ("watch", "true"),
            ("labelSelector", label_selector),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        method_, url, headers, _body, _post = self.api_client.param_serialize(
            method="GET",
            resource_path=path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        _count("GET", path, watch=True)
        try:
            # The read timeout outlasts the server's own end of the watch.
            response = self.api_client.call_api(
                method_,
                url,
                header_params=headers,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, timeout_seconds + 30),
            )
        except client.ApiException as error:
            status, message = error.status or 0, _message(error)
            if status in _TRANSIENT_STATUSES:
                raise TransientApiError(scrub(f"WATCH {path}: {status} {message}")) from error
            raise RejectedError(status, scrub(f"WATCH {path}: {message}")) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransientApiError(scrub(f"WATCH {path}: {error}"), unreachable=True) from error
        raw = response.response
        try:
            if not 200 <= response.status < 300:
                data = raw.read()
                status, message = response.status, _body_message(data, response.reason)
                if status in _TRANSIENT_STATUSES:
                    raise TransientApiError(scrub(f"WATCH {path}: {status} {message}"))
                raise RejectedError(status, scrub(f"WATCH {path}: {message}"))
            buffer = b""
            try:
                for chunk in raw.stream(65536, decode_content=True):
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            event: dict[str, Any] = json.loads(line)
                            obj = event.get("object")
                            if isinstance(obj, dict) and event.get("type") != "ERROR":
                                obj.setdefault("apiVersion", api_version)
                                obj.setdefault("kind", kind)
                            yield event
            except (urllib3.exceptions.HTTPError, OSError) as error:  # the server went away mid-stream
                raise TransientApiError(scrub(f"WATCH {path}: {error}"), unreachable=True) from error
            except ValueError as error:
                raise TransientApiError(scrub(f"WATCH {path}: {error}")) from error
        finally:
            raw.release_conn()

    def delete(
        self, api_version: str, kind: str, namespace: str | None, name: str, uid: str | None = None
    ) -> None:
        """Delete (background propagation); a precondition on uid avoids deleting a recreated namesake."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", kind_of(api_version, kind).object_path(namespace, name), body=body)
        except RejectedError as error:
            if error.status != 404:
                raise

    def patch_status(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        """Merge-patch /status; with `resource_version`, only if nobody wrote the object since it was read
        (a conflict is a TransientApiError: reconcile again from a fresh read). Returns the object as
        written (the cache keeps it, so the next pass plans from it without waiting for the watch)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        result: dict[str, Any] | None = self._call(
            "PATCH", kind.object_path(namespace, name) + "/status", body=body, content_type=MERGE_CONTENT_TYPE
        )
        return result

    def patch(self, kind: Kind, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PATCH", kind.object_path(namespace, name), body=patch, content_type=MERGE_CONTENT_TYPE
        )
        return result

    # -- events -------------------------------------------------------------------------------
    def event(self, involved: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        """Record a core/v1 Event on an object; losing one is not worth failing a reconcile for."""
        meta = involved["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.field_manager},
            "reportingComponent": self.field_manager,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with contextlib.suppress(TransientApiError, RejectedError):
            self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body)
