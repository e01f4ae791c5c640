"""kopf handlers: thin wiring of the watch-driven controller (controller.py) into kopf.

kopf watches the ModelDeployments and hands every event to the controller, which queues the object;
the informer caches (k8s/cache.py) watch what the reconciler reads and queue the owner of whatever
changed; a pool of workers reconciles from the cached state. kopf writes nothing on the objects any
more (no progress or diff-base annotations, no finalizer: one it put on an object earlier is removed
by kopf itself on the next event, as no handler needs it).

Errors: an invalid spec becomes a status condition and a Warning Event, and is not retried (it cannot
succeed until edited). API conflicts, throttling and 5xx are retried by the controller with growing
delays (never sooner than a Retry-After) a bounded number of times; the next event or the safety
resync picks up after that.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import kopf

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.controller import Controller
from modeldeploy_operator.domain.resource import GROUP, PLURAL, VERSION
from modeldeploy_operator.domain.rollout.commands import is_pending, parse_command
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus
from modeldeploy_operator.k8s.api import (
    UNREACHABLE_RETRY_MAX_SECONDS,
    USER_AGENT,
    KubeApi,
    backoff,
    new_api_client,
)
from modeldeploy_operator.k8s.cache import ClusterCache
from modeldeploy_operator.reconciler import Reconciler

SETTINGS = OperatorSettings()
log = logging.getLogger("modeldeploy.handlers")

CACHE_SYNC_SECONDS = 120.0
"""Workers start once every cache has listed, or after this (reads then fall back to the API)."""
WATCH_RECONNECT_SECONDS = 2.0
KOPF_RETRY_SECONDS = 300.0
"""How long kopf retries one request before it gives it up (a list or watch given up is started again
after WATCH_RECONNECT_SECONDS; another request fails)."""


def kopf_backoffs(total: float = KOPF_RETRY_SECONDS) -> list[float]:
    """kopf's pauses between the attempts of one request: 1, 2, 4, 4, ... s (+-20 %) for `total`
    seconds. kopf has one list for every error (a refused connection, 5xx, 403, 429), and its watch of
    ModelDeployments is how a spec change reaches us: capped at UNREACHABLE_RETRY_MAX_SECONDS, not 60 s,
    so that it sees an API server back within seconds (with 60 s it was 81-95 s after an outage of
    30-120 s). A 429's Retry-After still wins (enforce_retry_after is False: the longer of the two)."""
    delays: list[float] = []
    while sum(delays) < total:
        delays.append(round(backoff(len(delays) + 1, UNREACHABLE_RETRY_MAX_SECONDS, jitter=0.2), 2))
    return delays


WATCH_ERROR_BACKOFFS = kopf_backoffs()

_controller: Controller | None = None
_stop = threading.Event()


def command_waiting(body: Mapping[str, Any]) -> bool:
    """A manual command is on the object and status.lastCommand does not yet answer it (the planner's
    own test, `is_pending`, so the two can never disagree about what "handled" means)."""
    try:
        last = ModelDeploymentStatus.from_object(body).last_command
    except ValueError:  # a status an older operator wrote: the reconcile starts it afresh anyway
        last = None
    return is_pending(parse_command((body.get("metadata") or {}).get("annotations")), last)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _IdentifiedConnection(kopf.ConnectionInfo):
    """kopf's connection, with the operator's User-Agent (kopf's own would be `kopf/<version>`), so the
    API server counts kopf's watch of ModelDeployments as the operator's too."""

    def as_http_headers(self) -> dict[str, str]:
        return {**super().as_http_headers(), "User-Agent": USER_AGENT}


def identified(info: kopf.ConnectionInfo | None) -> kopf.ConnectionInfo | None:
    if info is None:
        return None
    return _IdentifiedConnection(**{f.name: getattr(info, f.name) for f in dataclasses.fields(info)})


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return identified(kopf.login_via_client(**kwargs))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Nothing of kopf's bookkeeping is needed (no change-detecting handlers); keep it under our prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Our own Events are the record; kopf's per-handler chatter becomes Events only for problems.
    settings.posting.level = logging.WARNING
    # We serve one known CRD: no need to watch CRDs and namespaces (and no RBAC to read them).
    settings.scanning.disabled = True
    settings.execution.max_workers = 4  # only the event handler below: it queues, it never waits
    configure_networking(settings)


def configure_networking(settings: kopf.OperatorSettings) -> None:
    """kopf's own API calls: Retry-After of a 429 is always the least pause (kopf waits the longer of it
    and the backoff); retries back off with jitter up to 4 s (kopf_backoffs) over about five minutes;
    a watch that ends is restarted after a pause,
    not at once (kopf's default is 0.1 s, and it restarts a watch whose 429 outlived the retries)."""
    settings.networking.error_backoffs = WATCH_ERROR_BACKOFFS
    settings.networking.enforce_retry_after = False  # the longer of Retry-After and the backoff
    settings.watching.reconnect_backoff = WATCH_RECONNECT_SECONDS
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def build_controller(api: KubeApi, settings: OperatorSettings) -> tuple[Controller, ClusterCache]:
    """The reconciler reading from informer caches of what it reads, and the controller driving it;
    the caches' events queue the owners."""
    holder: list[Controller] = []
    reconciler = Reconciler(api, settings)
    cache = ClusterCache(
        api,
        reconciler.cached_kinds,
        settings.namespaces,
        lambda kind, event_type, obj: holder[0].on_owned(kind, event_type, obj) if holder else None,
        fallback=api,
    )
    reconciler.cache = cache
    reconciler.reads = cache
    controller = Controller(reconciler, settings)
    holder.append(controller)
    return controller, cache


@kopf.on.startup()
def start(**_: Any) -> None:
    """Start the caches, and the workers once the caches have listed. kopf runs once per leadership
    term (main.py): each term builds its own controller, whose KubeApi writes for that term only.

    Returns at once: kopf starts watching ModelDeployments only after its startup handlers, and its list
    of them (each queued) now goes on while the caches list, instead of after. Nothing is reconciled
    before the caches have listed (or CACHE_SYNC_SECONDS passed): the queue holds the keys till then."""
    global _controller, _stop  # noqa: PLW0603 - one controller per kopf run, started with it
    # A stop flag of this term's own: an earlier term's informer still inside a watch (it ends within
    # WATCH_TIMEOUT_SECONDS) finds its flag set when it comes out, instead of a flag cleared again.
    _stop = threading.Event()
    controller, cache = build_controller(KubeApi(new_api_client(), SETTINGS.field_manager), SETTINGS)
    cache.start(_stop)
    _controller = controller
    threading.Thread(
        target=start_workers, args=(controller, cache, _stop), name="start-workers", daemon=True
    ).start()


def start_workers(
    controller: Controller, cache: ClusterCache, stop: threading.Event, timeout: float = CACHE_SYNC_SECONDS
) -> None:
    """The reconcile workers, once every cache has listed (or after `timeout`: reads then fall back to
    the API)."""
    started = time.monotonic()
    synced = cache.wait_synced(timeout)
    if stop.is_set():
        return
    if synced:
        log.info(
            "caches listed in %.1fs (%d objects); %d ModelDeployments queued",
            time.monotonic() - started,
            sum(len(i) for i in cache.informers.values()),
            len(controller.queue),
        )
    else:
        log.warning("caches not listed after %.0fs; starting anyway (reads fall back to the API)", timeout)
    controller.start(stop)


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    _stop.set()
    if _controller is not None:
        _controller.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_modeldeployment(body: kopf.Body, **kwargs: Any) -> None:
    """Every watch event of a ModelDeployment (created, spec changed, a manual command in the
    `modeldeploy.io/command` annotation, deleted; `type` None for those listed at start-up): queued at
    once, coalesced with a pass already waiting. Our own status write coming back is stored, not
    queued (controller.py)."""
    if _controller is None:
        return  # not started (a unit test importing the module)
    _controller.on_modeldeployment(kwargs.get("type"), dict(body))
