"""Informer-style caches of the objects the reconciler reads: list once, then watch (issue 16).

Before this, every reconcile listed nine kinds (about 18 API requests per ModelDeployment per idle
minute at a 30 s resync). Now each kind is listed once per scope (the cluster, or each watched
namespace) and then watched; a reconcile reads the cache, indexed by the owning ModelDeployment's
label (`modeldeploy.io/deployment=<name>`, the selector the LISTs used), so an idle ModelDeployment
costs the API server nothing but its share of one watch per kind.

One `Informer` per (kind, scope), each on its own thread, in the client-go way:
- list (paged) -> store and resourceVersion -> watch from it, with bookmarks so the resourceVersion
  stays fresh while nothing of ours changes;
- the server ends a watch after `timeoutSeconds` (300): re-watch at once from the last resourceVersion;
- 410 Gone (the resourceVersion was compacted away), as an HTTP status or an ERROR event: list again,
  and tell the listener what changed meanwhile (an object missing from the new list was DELETED, one
  with another resourceVersion MODIFIED), so nothing is missed across the gap;
- any other failure: retry after a growing, jittered backoff, up to 60 s for an answer (5xx, 429, a
  watch error) but only UNREACHABLE_RETRY_MAX_SECONDS (4 s) while no API server answers (connection
  refused or lost), counted apart: an API server back after an outage is watched again within
  seconds, and its first answers (a 503 or 403 while it starts) do not inherit the outage's count;
- a list refused (403: a permission missing; 404: HTTPRoutes without the Gateway API) is remembered,
  and reads of that kind raise the refusal, as the LIST did; it is asked again after the same growing
  backoff, up to `REFUSED_RETRY_SECONDS`, so a permission granted later heals within a minute;
- the echo of our own write (an event whose resourceVersion one of our writes returned: `OwnWrites`)
  updates the store but is not told to the listener: the pass that wrote it knew, and queues its
  own follow-up (controller.py). Every other event is told, so nobody else's change is ever dropped.

Objects in the store are replaced, never changed in place: readers get them without a copy and must
not modify them. The store keeps of each object only what readers read (k8s/projection.py,
applied to every object that enters it: each page of a list, each watch event, each write's answer).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter

from modeldeploy_operator.domain import labels as lbl
from modeldeploy_operator.k8s.api import (
    RejectedError,
    TransientApiError,
    backoff,
    retry_cap,
)
from modeldeploy_operator.k8s.projection import projection

log = logging.getLogger("modeldeploy.cache")

OWN_WRITE_ECHOES = Counter(
    "modeldeploy_operator_own_write_echoes_total",
    "Watch events recognised as the echo of the operator's own write (its resourceVersion), kept but "
    "queueing no reconcile, by kind.",
    ["kind"],
)

WATCH_TIMEOUT_SECONDS = 300
"""The server ends each watch after this; it is then restarted from the last resourceVersion (one
request per kind and scope every five minutes: the whole idle cost of the cache)."""
WATCH_RETRY_MAX_SECONDS = 60.0
"""The longest pause after failures the API server answered (5xx, 429, a watch's ERROR event)."""
REFUSED_RETRY_SECONDS = 60.0
"""A kind whose list was refused (403/404) is asked again after a backoff growing up to this. It was a
fixed 300 s: an operator restarted while a permission was missing read every ModelDeployment's Services
as forbidden for five minutes after the permission came back (reproduced on the local cluster,
2026-12-03: the missing-permission test, right after the operator-restart test). One LIST a minute of a
kind that stays refused (no Gateway API installed) costs the API server next to nothing."""
INDEX_LABEL = lbl.DEPLOYMENT_LABEL
EMPTY_WATCH_SECONDS = 1.0
"""A watch that ends sooner than this with no event counts as a failure (backoff, not a tight loop)."""

Key = tuple[str, str]
"""(namespace, name)"""
Listener = Callable[["CachedKind", str, dict[str, Any]], None]
"""Told of every change: (kind, "ADDED" | "MODIFIED" | "DELETED", the object)."""


class WatchSource(Protocol):
    """What an informer needs of the API (KubeApi has it; the tests fake it)."""

    def list_all(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str,
        project: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Every matching object (each passed through `project` as its page comes, so that a list of
        thousands never holds them whole at once) and the list's resourceVersion."""
        ...

    def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int,
    ) -> Iterable[dict[str, Any]]: ...


class Lister(Protocol):
    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class CachedKind:
    api_version: str
    kind: str
    label_selector: str = INDEX_LABEL
    """What is cached: by default every object carrying the index label (any value); "" for all."""


def watch_backoff(failures: int, cap: float) -> float:
    """1, 2, 4, ... `cap` s (+-20 %) after 1, 2, 3, ... failures in a row."""
    return backoff(failures, cap, jitter=0.2)


class _GoneError(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _index_value(obj: dict[str, Any]) -> str | None:
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(INDEX_LABEL)
    return value if isinstance(value, str) else None


class OwnWrites:
    """The resourceVersions our own writes returned, per object, until the watch brings them back: an
    event carrying one of them is the echo of our write, not a change by someone else.

    A resourceVersion names one state of one object (etcd's revision of the write that made it), so a
    match can only be that write's own event; any change by someone else has another one and is never
    taken for an echo. The watch delivers an object's events in resourceVersion order: once an event
    at or past a remembered version has come, that version's echo has come or never will (a relist
    skipped it), so it is forgotten then: nothing stays behind for long."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[Key, set[str]] = {}

    def record(self, key: Key, resource_version: str) -> None:
        if not resource_version:
            return
        with self._lock:
            self._versions.setdefault(key, set()).add(resource_version)

    def is_echo(self, key: Key, resource_version: str) -> bool:
        """Whether this event of `key` is the echo of one of our writes; versions up to it are dropped."""
        with self._lock:
            versions = self._versions.get(key)
            if not versions or not resource_version:
                return False
            ours = resource_version in versions
            versions.difference_update({v for v in versions if not newer(v, resource_version)})
            if not versions:
                del self._versions[key]
            return ours

    def forget(self, key: Key) -> None:
        with self._lock:
            self._versions.pop(key, None)

    def forget_up_to(self, resource_version: str) -> None:
        """A relist at `resource_version` told every change up to it: older echoes will not come."""
        with self._lock:
            for key in list(self._versions):
                versions = {v for v in self._versions[key] if newer(v, resource_version)}
                if versions:
                    self._versions[key] = versions
                else:
                    del self._versions[key]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._versions.values())


def newer(candidate: str, current: str) -> bool:
    """Whether resourceVersion `candidate` is later than `current`. They are opaque to clients, but
    the API server's are etcd revisions (integers); anything else is taken as newer."""
    try:
        return int(candidate) > int(current)
    except ValueError:
        return candidate != current


def _surely_later(kept: str, event: str) -> bool:
    """Whether the kept copy is known to be later than an event's (both etcd revisions); when the
    versions cannot be compared, the watch's event wins, as it did before copies of our writes were
    kept."""
    try:
        return int(kept) > int(event)
    except ValueError:
        return False


class Informer:
    def __init__(
        self,
        source: WatchSource,
        kind: CachedKind,
        namespace: str | None,
        listener: Listener | None = None,
        *,
        backoff: Callable[[int, float], float] = watch_backoff,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        refused_retry_seconds: float = REFUSED_RETRY_SECONDS,
        retry_max_seconds: float = WATCH_RETRY_MAX_SECONDS,
    ) -> None:
        self.source = source
        self.kind = kind
        self.namespace = namespace
        self.listener = listener
        self.backoff = backoff
        self.watch_timeout_seconds = watch_timeout_seconds
        self.refused_retry_seconds = refused_retry_seconds
        self.retry_max_seconds = retry_max_seconds
        self.project = projection(kind.kind)
        """What the store keeps of each object (k8s/projection.py)."""
        self._lock = threading.Lock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._index: defaultdict[Key, set[str]] = defaultdict(set)
        self._by_namespace: defaultdict[str, set[str]] = defaultdict(set)
        self._resource_version = ""
        self.synced = threading.Event()
        """Set once a list succeeded, or was refused (reads then raise the refusal)."""
        self.refused: RejectedError | None = None
        self.own = OwnWrites()
        """Versions our writes returned whose watch event has not come yet (not told when it does)."""
        self.lists = 0
        self.watches = 0
        self.echoes = 0
        """Events recognised as the echo of our own write (kept, not told)."""

    # -- reads ----------------------------------------------------------------------------------
    def objects(self, namespace: str, index_value: str | None = None) -> list[dict[str, Any]]:
        """The namespace's objects; with `index_value`, only those labelled INDEX_LABEL=index_value."""
        with self._lock:
            if index_value is None:
                names = self._by_namespace.get(namespace, set())
            else:
                names = self._index.get((namespace, index_value), set())
            return [self._objects[(namespace, name)] for name in sorted(names)]

    @property
    def resource_version(self) -> str:
        with self._lock:
            return self._resource_version

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    # -- writes ---------------------------------------------------------------------------------
    def remember(self, obj: dict[str, Any]) -> None:
        """An object as our own write returned it: kept unless the watch already brought a later one,
        so a pass that follows at once plans from what was written (no conflict, no second apply);
        and its version noted, so the watch event of this write is not told as a change."""
        obj = self.project({"apiVersion": self.kind.api_version, "kind": self.kind.kind, **obj})
        with self._lock:
            current = self._objects.get(_key(obj))
            if current is not None and not newer(_rv(obj), _rv(current)):
                return  # the watch brought this version (told already) or a later one
            self.own.record(_key(obj), _rv(obj))
            self._put(obj)

    def _put(self, obj: dict[str, Any]) -> None:
        """Keep `obj`, projected already (`project`)."""
        key = _key(obj)
        old = self._objects.get(key)
        if old is not None:
            self._unindex(old)
        self._objects[key] = obj
        self._by_namespace[key[0]].add(key[1])
        value = _index_value(obj)
        if value is not None:
            self._index[(key[0], value)].add(key[1])

    def _unindex(self, obj: dict[str, Any]) -> None:
        namespace, name = _key(obj)
        value = _index_value(obj)
        if value is not None:
            names = self._index.get((namespace, value))
            if names is not None:
                names.discard(name)
                if not names:
                    del self._index[(namespace, value)]

    def _drop(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        old = self._objects.pop(key, None)
        if old is not None:
            self._unindex(old)
            names = self._by_namespace.get(key[0])
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self._by_namespace[key[0]]

    def _tell(self, changes: Iterable[tuple[str, dict[str, Any]]]) -> None:
        if self.listener is None:
            return
        for event_type, obj in changes:
            try:
                self.listener(self.kind, event_type, obj)
            except Exception:  # a listener's bug must not stop the cache
                log.exception("listener failed on %s %s", self.kind.kind, _key(obj))

    # -- list and watch -------------------------------------------------------------------------
    def relist(self) -> None:
        """List everything and replace the store; tell the listener what changed since the last state."""
        items, resource_version = self.source.list_all(
            self.kind.api_version, self.kind.kind, self.namespace, self.kind.label_selector, self.project
        )
        self.lists += 1
        changes: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            fresh = {_key(item): item for item in items}
            for key, old in list(self._objects.items()):
                if key not in fresh:
                    changes.append(("DELETED", old))
            for key, item in fresh.items():
                known = self._objects.get(key)
                if known is None:
                    changes.append(("ADDED", item))
                elif _rv(known) != _rv(item):
                    changes.append(("MODIFIED", item))
            self._objects = {}
            self._index = defaultdict(set)
            self._by_namespace = defaultdict(set)
            for item in items:
                self._put(item)
            self._resource_version = resource_version
            was_refused, self.refused = self.refused, None
            self.own.forget_up_to(resource_version)
        self.synced.set()
        if was_refused is not None:
            log.info(
                "%s list in %s allowed again (%d objects)", self.kind.kind, self.namespace or "*", len(items)
            )
        self._tell(changes)

    def watch_once(self) -> int:
        """One watch, from the last resourceVersion until the server ends it; how many events came.
        Raises _GoneError on 410."""
        self.watches += 1
        seen = 0
        stream = self.source.watch(
            self.kind.api_version,
            self.kind.kind,
            self.namespace,
            self.kind.label_selector,
            self.resource_version,
            self.watch_timeout_seconds,
        )
        try:
            for event in stream:
                seen += 1
                self._apply(event)
        finally:
            if isinstance(stream, Iterator) and hasattr(stream, "close"):
                with contextlib.suppress(Exception):
                    stream.close()
        return seen

    def _apply(self, event: dict[str, Any]) -> None:
        event_type, obj = event.get("type"), event.get("object") or {}
        if event_type == "ERROR":
            if obj.get("code") == 410:
                raise _GoneError(obj.get("message", "resourceVersion too old"))
            raise TransientApiError(f"watch of {self.kind.kind}: {obj.get('code')} {obj.get('message')}")
        if event_type == "BOOKMARK":
            with self._lock:
                self._resource_version = _rv(obj) or self._resource_version
            return
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            return
        obj = self.project(obj)
        key, version = _key(obj), _rv(obj)
        with self._lock:
            current = self._objects.get(key)
            # A later copy than the event's can only be one our write returned (remember): kept, as
            # it holds this event's change too; the event is still told (it may be someone else's).
            later_kept = current is not None and _surely_later(_rv(current), version)
            if event_type == "DELETED":
                self.own.is_echo(key, version)  # (drops the versions it passed; a deletion is told)
                echo = False
                if not later_kept:  # (a later copy: our write re-created it after this deletion)
                    self._drop(obj)
            else:
                echo = self.own.is_echo(key, version)
                if not later_kept:
                    self._put(obj)
            self._resource_version = version or self._resource_version
            self.echoes += echo
        if echo:
            OWN_WRITE_ECHOES.labels(self.kind.kind).inc()
            return
        self._tell([(event_type, obj)])

    def _refused(self, error: RejectedError, failures: int) -> float:
        """Remember a refused list (reads raise it); the pause before asking again."""
        with self._lock:
            first = self.refused is None
            self.refused = error
        self.synced.set()
        if first:  # (said once: a kind that stays refused is asked again every minute)
            log.warning(
                "%s list in %s refused, its reads fail until it is allowed: %s",
                self.kind.kind,
                self.namespace or "*",
                error,
            )
        return min(self.refused_retry_seconds, self.backoff(failures, self.refused_retry_seconds))

    def _transient(self, error: TransientApiError, streak: _Streak) -> float:
        """The pause after a transient failure: while no API server answers, counted apart and capped
        short (an outage's count is not inherited by the first answers of the server back)."""
        if error.unreachable:
            streak.unreachable += 1
            return self.backoff(streak.unreachable, retry_cap(error, self.retry_max_seconds))
        streak.unreachable, streak.answered = 0, streak.answered + 1
        return self.backoff(streak.answered, self.retry_max_seconds)

    def run(self, stop: threading.Event) -> None:
        """List, then watch until `stop`; relist on 410, back off on failures."""
        streak = _Streak()
        cap = self.retry_max_seconds
        must_list = True
        while not stop.is_set():
            try:
                if must_list:
                    self.relist()
                    must_list, streak.unreachable = False, 0
                started = time.monotonic()
                if self.watch_once() or time.monotonic() - started >= EMPTY_WATCH_SECONDS:
                    streak.answered = streak.unreachable = 0  # the server ended it: watch again at once
                    continue
                # Ended at once with nothing in it (a proxy closing watches?): never a tight loop.
                streak.answered += 1
                delay = self.backoff(streak.answered, cap)
            except _GoneError as gone:
                log.info("%s watch in %s: %s; listing again", self.kind.kind, self.namespace or "*", gone)
                must_list = True
                streak.answered += 1
                if streak.answered == 1:
                    continue  # the first 410 relists at once; a loop of them backs off
                delay = self.backoff(streak.answered, cap)
            except RejectedError as error:
                streak.answered, streak.unreachable = streak.answered + 1, 0
                if error.status == 410:
                    must_list = True
                    if streak.answered == 1:
                        continue
                    delay = self.backoff(streak.answered, cap)
                elif must_list and error.status in (403, 404):
                    delay = self._refused(error, streak.answered)
                else:
                    delay = self.backoff(streak.answered, cap)
                    log.warning("%s watch in %s: %s", self.kind.kind, self.namespace or "*", error)
            except TransientApiError as error:
                delay = self._transient(error, streak)
                log.info("%s watch in %s: %s (retry in %.1fs)", self.kind.kind, self.namespace, error, delay)
            except Exception:  # never let the thread die: the cache would silently go stale
                streak.answered += 1
                delay = self.backoff(streak.answered, cap)
                log.exception("%s watch in %s failed", self.kind.kind, self.namespace or "*")
            stop.wait(delay)


@dataclass
class _Streak:
    """Failures in a row of one informer: those the API server answered (or a watch that ended at
    once), and attempts that reached no API server, counted apart."""

    answered: int = 0
    unreachable: int = 0


class ClusterCache:
    """The informers of every cached kind in every watched scope, read like `KubeApi.list`."""

    def __init__(
        self,
        source: WatchSource,
        kinds: Sequence[CachedKind],
        namespaces: Sequence[str] = (),
        listener: Listener | None = None,
        *,
        fallback: Lister | None = None,
        backoff: Callable[[int, float], float] = watch_backoff,
    ) -> None:
        self.kinds = tuple(kinds)
        self.fallback = fallback
        scopes: Sequence[str | None] = tuple(namespaces) or (None,)
        self.informers: dict[tuple[str, str, str | None], Informer] = {
            (k.api_version, k.kind, scope): Informer(source, k, scope, listener, backoff=backoff)
            for k in self.kinds
            for scope in scopes
        }
        self._threads: list[threading.Thread] = []

    def start(self, stop: threading.Event) -> None:
        for (_, kind, scope), informer in self.informers.items():
            thread = threading.Thread(
                target=informer.run, args=(stop,), name=f"watch-{kind}-{scope or 'all'}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(i.synced.wait(max(0.0, deadline - time.monotonic())) for i in self.informers.values())

    def _informer(self, api_version: str, kind: str, namespace: str | None) -> Informer | None:
        found = self.informers.get((api_version, kind, namespace))  # (an empty Informer is falsy)
        return found if found is not None else self.informers.get((api_version, kind, None))

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        """What `KubeApi.list` answers, from the cache: `label_selector` is "" (the whole namespace)
        or `modeldeploy.io/deployment=<name>`. A kind not cached, or not listed yet, is asked of
        the API (the fallback), so a read is never served from nothing."""
        informer = self._informer(api_version, kind, namespace) if namespace else None
        index_value: str | None = None
        if label_selector:
            label, _, value = label_selector.partition("=")
            if label != INDEX_LABEL or not value:
                informer = None
            index_value = value
        if informer is None or not informer.synced.is_set():
            if self.fallback is None:
                raise TransientApiError(f"{kind} not cached yet")
            return self.fallback.list(api_version, kind, namespace, label_selector)
        if informer.refused is not None:
            raise RejectedError(informer.refused.status, str(informer.refused))
        assert namespace is not None
        return informer.objects(namespace, index_value)

    def remember(self, obj: dict[str, Any] | None) -> None:
        """Keep what one of our writes returned (see Informer.remember)."""
        if not obj or not isinstance(obj.get("metadata"), dict):
            return
        informer = self._informer(obj.get("apiVersion", ""), obj.get("kind", ""), _key(obj)[0])
        if informer is not None:
            informer.remember(obj)
