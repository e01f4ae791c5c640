"""kopf handlers: thin wiring of the reconciler (domain + Kubernetes client layer) into kopf.

Triggers, all funnelled into the same level-triggered reconcile, serialised per object:
- the ModelDeployment is created, changed, or found at start-up (resume);
- a manual command (the modeldeploy.io/command annotation the plugin writes) is waiting: acted on at
  once, from the watch event of the annotation change, not at the next resync;
- an owned Deployment changes (pods became ready, someone edited or deleted it);
- a periodic resync, which repairs drift even if a watch event was missed.

Errors: an invalid spec becomes a status condition and a Warning Event, and is not retried (it
cannot succeed until edited). API conflicts, throttling and 5xx raise kopf.TemporaryError, which kopf
retries with growing delays a bounded number of times; the resync picks up after that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kubernetes import client, config

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain import labels as lbl
from modeldeploy_operator.domain.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from modeldeploy_operator.domain.rollout.commands import is_pending, parse_command
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus
from modeldeploy_operator.k8s.api import KubeApi, RejectedError, TransientApiError
from modeldeploy_operator.metrics import ROLLOUT_STATE
from modeldeploy_operator.reconciler import Outcome, Reconciler
from modeldeploy_operator.wakeup import WakeUps

SETTINGS = OperatorSettings()
log = logging.getLogger("modeldeploy.handlers")

_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
_wakeups = WakeUps()
"""Per object, the one wake-up its daemon sleeps on; every reconcile (any trigger) re-arms it."""

WATCH_RECONNECT_SECONDS = 2.0
WATCH_ERROR_BACKOFFS = [
    round(min(60.0, 2.0**n) * random.uniform(0.8, 1.2), 2)  # noqa: S311 - jitter, not cryptography
    for n in range(10)
]
"""1, 2, 4, ... 60 s (+-20 %): about five minutes of retries before kopf gives a request up."""
_reconciler: Reconciler | None = None


def _get_reconciler() -> Reconciler:
    global _reconciler  # noqa: PLW0603 - one client per process, made after kopf's login
    if _reconciler is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        _reconciler = Reconciler(KubeApi(client.ApiClient(), SETTINGS.field_manager), SETTINGS)
    return _reconciler


def _epoch(moment: dt.datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _backoff(retry: int) -> float:
    return float(min(SETTINGS.retry_backoff_seconds * 2**retry, SETTINGS.retry_backoff_max_seconds))


def command_waiting(body: Mapping[str, Any]) -> bool:
    """A manual command is on the object and status.lastCommand does not yet answer it (the planner's
    own test, `is_pending`, so the two can never disagree about what "handled" means)."""
    try:
        last = ModelDeploymentStatus.from_object(body).last_command
    except ValueError:  # a status an older operator wrote: the reconcile starts it afresh anyway
        last = None
    return is_pending(parse_command((body.get("metadata") or {}).get("annotations")), last)


def _run(
    body: dict[str, Any],
    retry: int = 0,
    *,
    raise_temporary: bool = True,
    only_if: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Outcome | None:
    meta = body["metadata"]
    with _locks[meta["uid"]]:
        try:
            # Plan from the object as it is now, not from the copy this trigger carried: another
            # trigger may have advanced the rollout (and its status) meanwhile.
            fresh = _get_reconciler().api.get(API_VERSION, KIND, meta["namespace"], meta["name"])
            if fresh is None or fresh["metadata"]["uid"] != meta["uid"]:
                return None
            if only_if is not None and not only_if(fresh):
                return None  # another trigger got there first (e.g. the command was handled meanwhile)
            outcome = _get_reconciler().reconcile(fresh)
            # Inside the lock, so the daemon always sleeps on the timer of the latest pass.
            _wakeups.of(meta["uid"]).arm(_epoch(outcome.next_due) if outcome is not None else None)
            return outcome
        except TransientApiError as error:
            # Try again after a backoff, not at a timer that is already due (no tight loop).
            _wakeups.of(meta["uid"]).arm(time.time() + _backoff(retry))
            if raise_temporary:
                # Throttled (429) or unavailable with a Retry-After: never sooner than the server asked.
                delay = max(_backoff(retry), error.retry_after or 0.0)
                raise kopf.TemporaryError(str(error), delay=delay) from error
            log.warning(
                "reconcile of %s/%s deferred: %s",
                body["metadata"]["namespace"],
                body["metadata"]["name"],
                error,
            )
        except RejectedError as error:
            # The API server refused what we built: a bug or an admission policy. Retrying the same
            # objects cannot help; status and an Event already say so, and the resync tries again.
            raise kopf.PermanentError(str(error)) from error
    return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations under our own prefix, not in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Our own Events are the record; kopf's per-handler chatter becomes Events only for problems.
    settings.posting.level = logging.WARNING
    # We serve one known CRD: no need to watch CRDs and namespaces (and no RBAC to read them).
    settings.scanning.disabled = True
    settings.execution.max_workers = 8
    configure_networking(settings)


def configure_networking(settings: kopf.OperatorSettings) -> None:
    """kopf's own API calls: Retry-After of a 429 is always the least pause (kopf waits the longer of it
    and the backoff); retries back off exponentially with jitter over about five minutes, so a
    throttled or restarting API server is not hammered; a watch that ends is restarted after a pause,
    not at once (kopf's default is 0.1 s, and it restarts a watch whose 429 outlived the retries)."""
    settings.networking.error_backoffs = WATCH_ERROR_BACKOFFS
    settings.networking.enforce_retry_after = False  # the longer of Retry-After and the backoff
    settings.watching.reconnect_backoff = WATCH_RECONNECT_SECONDS
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


_HANDLER_OPTIONS: dict[str, Any] = {
    "retries": SETTINGS.retry_limit,
    "timeout": SETTINGS.handler_timeout_seconds,
    "backoff": SETTINGS.retry_backoff_seconds,
}


@kopf.on.resume(GROUP, VERSION, PLURAL, **_HANDLER_OPTIONS)
@kopf.on.create(GROUP, VERSION, PLURAL, **_HANDLER_OPTIONS)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", **_HANDLER_OPTIONS)
def on_modeldeployment(body: kopf.Body, retry: int, **_: Any) -> None:
    _run(dict(body), retry)


def _command_event_filter(body: kopf.Body, **kwargs: Any) -> bool:
    """kopf's `when` filter of the command trigger: cheap (no API call), so every watch event of every
    ModelDeployment can be tested; only a waiting command gets as far as a reconcile."""
    return kwargs.get("type") != "DELETED" and command_waiting(body)


@kopf.on.event(GROUP, VERSION, PLURAL, when=_command_event_filter)
def on_command(body: kopf.Body, **_: Any) -> None:
    """A manual command arrived (the plugin's annotation patch): reconcile now, so `kubectl modeldeploy
    promote|abort|pause|resume|rollback` is applied within a watch round trip and one reconcile, not
    at the next resync. Level-triggered like every other trigger: events that arrive while the command
    is being handled find it answered on the fresh read and do nothing."""
    _run(dict(body), raise_temporary=False, only_if=command_waiting)


async def _until_stopped(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()


def _gone(body: Mapping[str, Any]) -> bool:
    """The object is deleted (or replaced by a namesake): its daemon ends itself. Without a finalizer
    (below) kopf does not stop a daemon whose object was deleted at once."""
    meta = body["metadata"]
    try:
        fresh = _get_reconciler().api.get(API_VERSION, KIND, meta["namespace"], meta["name"])
    except (TransientApiError, RejectedError):
        return False  # unknown: the next pass asks again
    return fresh is None or fresh["metadata"]["uid"] != meta["uid"]


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5, initial_delay=1)
async def drive(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Per object: reconcile when the next timer of its latest status is due (a pause ending, the next
    analysis interval, a deadline), and at least every resync period to repair drift. Every reconcile,
    whichever trigger ran it, re-arms the one wake-up this daemon sleeps on (wakeup.py), so a timer
    set by an event-driven pass (a pause that started when the canary's pods became ready, a command)
    fires on time rather than at the daemon's own next wake-up."""
    uid = body["metadata"]["uid"]
    wakeup = _wakeups.of(uid)
    stop = asyncio.ensure_future(_until_stopped(stopped))
    try:
        while not stopped:
            wakeup = _wakeups.of(uid)  # the one every pass arms (the same object unless re-registered)
            try:
                outcome = await asyncio.to_thread(_run, dict(body), raise_temporary=False)
                if outcome is None and await asyncio.to_thread(_gone, body):
                    break
            except kopf.PermanentError as error:
                log.warning(
                    "reconcile of %s/%s refused: %s",
                    body["metadata"]["namespace"],
                    body["metadata"]["name"],
                    error,
                )
                wakeup.arm(None)  # nothing timed from a refused pass: the resync tries again
            if not await wakeup.sleep(SETTINGS.resync_seconds, stop):
                break
    finally:
        stop.cancel()
        _wakeups.forget(uid, wakeup)
        # The object is gone (or the operator stops leading): its rollout series go with it.
        ROLLOUT_STATE.forget(body["metadata"]["namespace"], body["metadata"]["name"])


def _no_finalizers(registry: kopf.OperatorRegistry) -> None:
    """kopf puts a finalizer on every object a daemon serves (`kopf.daemon` registers its handler with
    requires_finalizer=True, kopf 1.45), so that it can stop the daemon before the object goes; only a
    running operator removes it. Then deleting a ModelDeployment, or its namespace, with the operator
    uninstalled or scaled to zero never completes (issue 11). Nothing of ours needs to run before an
    object goes (what it owns is garbage-collected by owner references), so the daemon is registered
    without the finalizer: it ends itself when it finds its object gone (`_gone`), woken by the DELETED
    event. An older operator's finalizer is removed by kopf at the object's next event (no handler
    needs it)."""
    spawning = registry._spawning
    spawning._handlers = [dataclasses.replace(h, requires_finalizer=False) for h in spawning._handlers]


_no_finalizers(kopf.get_default_registry())


def _deleted_event(**kwargs: Any) -> bool:
    return kwargs.get("type") == "DELETED"


@kopf.on.event(GROUP, VERSION, PLURAL, when=_deleted_event)
def on_deleted(body: kopf.Body, **_: Any) -> None:
    """Wake the object's daemon (if it runs) so that it finds the object gone and ends now, not at its
    next timer or resync."""
    _wakeups.wake(body["metadata"]["uid"])


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": lbl.MANAGED_BY})
def on_owned_deployment(body: kopf.Body, **_: Any) -> None:
    """An owned Deployment changed (or was deleted): reconcile its ModelDeployment now."""
    owner = next(
        (
            ref
            for ref in body.get("metadata", {}).get("ownerReferences", [])
            if ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION
        ),
        None,
    )
    if owner is None:
        return
    namespace = body["metadata"]["namespace"]
    if SETTINGS.namespaces and namespace not in SETTINGS.namespaces:
        return
    try:
        parent = _get_reconciler().api.get(API_VERSION, KIND, namespace, owner["name"])
    except (TransientApiError, RejectedError) as error:
        log.warning("could not read the owner of %s/%s: %s", namespace, body["metadata"]["name"], error)
        return
    if (
        parent is None
        or parent["metadata"]["uid"] != owner["uid"]
        or parent["metadata"].get("deletionTimestamp")
    ):
        return
    _run(parent, raise_temporary=False)
