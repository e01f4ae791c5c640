"""One reconcile of one ModelDeployment: an ordered list of small idempotent steps ending in one
status write. Level-triggered: it recomputes everything from the object and what exists, so running it
twice changes nothing, and an owned object someone edited or deleted is put back.

    parse -> observe -> measure (when analysis is due) -> plan (pure) -> build (pure)
          -> apply -> prune -> events -> status
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from modeldeploy_contract.router_config import CONFIG_KEY, config_map_name
from modeldeploy_operator.analysis import AnalysisTarget, MeasurementPool, analysis_sources, select_checks
from modeldeploy_operator.analysis.fetch import new_client
from modeldeploy_operator.analysis.replay import Replayer, ReplayTarget
from modeldeploy_operator.analysis.servers import ServerPod, ServerReports
from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain import labels as lbl
from modeldeploy_operator.domain.desired_state import (
    NETWORK_POLICY_KINDS,
    OWNED_KINDS,
    ROUTER_RBAC_KINDS,
    BuildOptions,
    DesiredState,
    apply_waves,
    desired_state,
    stale_objects,
)
from modeldeploy_operator.domain.joiner import own_joiner, with_own_joiner
from modeldeploy_operator.domain.manifests import CONTAINER_NAME, build_replicas_handover
from modeldeploy_operator.domain.observed import (
    ObservedDeployment,
    externally_scaled,
    pods_owned_by,
    with_server_reports,
)
from modeldeploy_operator.domain.pods import PodDefaults
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.resource import API_VERSION, KIND, ModelDeploymentRef
from modeldeploy_operator.domain.revision import SERVER_PORT
from modeldeploy_operator.domain.rollout.commands import parse_command
from modeldeploy_operator.domain.rollout.model import Plan
from modeldeploy_operator.domain.rollout.planner import analysis_request, analysis_subject, plan
from modeldeploy_operator.domain.rollout.preflight import PreflightRequest, preflight_requests
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status import (
    status_for_invalid_spec,
    with_command_refused,
    with_error,
)
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus, PreflightStatus
from modeldeploy_operator.domain.stream import HANDOVER_POLL_SECONDS
from modeldeploy_operator.domain.traffic import call_url
from modeldeploy_operator.domain.validation import InvalidSpecError, parse_spec, validate_name
from modeldeploy_operator.k8s.api import (
    KubeApi,
    NamespaceTerminatingError,
    RejectedError,
    TransientApiError,
)
from modeldeploy_operator.k8s.cache import INDEX_LABEL, CachedKind, ClusterCache, Lister
from modeldeploy_operator.k8s.diff import unchanged, with_applied_hash
from modeldeploy_operator.k8s.kinds import kind_of
from modeldeploy_operator.metrics import (
    APPLIED_OBJECTS,
    APPLY_SKIPPED,
    RECONCILE_CPU_SECONDS,
    RECONCILE_ERRORS,
    RECONCILE_SECONDS,
    RECONCILES,
    ROLLOUT_STATE,
)

log = logging.getLogger("modeldeploy.reconcile")
_MODELDEPLOYMENT = kind_of(API_VERSION, KIND)
_DEPLOYMENT = kind_of("apps/v1", "Deployment")
CRASH_LOOP_RESTARTS = 3
ANALYSIS_POLL_SECONDS = 1.0
"""How soon an object whose measurement is running is reconciled again to pick the readings up."""
PREFLIGHT_DEADLINE_SECONDS = 660.0
"""The pool gives up on a replay after this (above the largest rollout.preflight.timeoutSeconds, 600,
which the replay enforces itself)."""
PREFLIGHT_RETRY_MAX_SECONDS = 30.0
"""A replay that could not complete is retried after 2^attempts seconds, at most this."""
SERVER_PROBE_DEADLINE_SECONDS = 5.0
"""A server's health answer not back after this is given up (asked again RETRY_SECONDS later)."""
SERVER_PROBE_WORKERS = 8
SERVER_PROBE_JOBS = 256
"""Probes started at once (the rest wait in the pool's queue), and how many may be waiting or running.
A probe the pool cannot take leaves its ModelDeployment polled every SERVER_POLL_SECONDS until it
can, and an answer is collected only by the object's next pass: with 2 workers and 8 jobs, 1,000
ModelDeployments created at once kept the operator busy with 16,677 passes a minute that wrote
nothing (0.84 cores), long after the creation, and every reaction waited behind them
(docs/benchmarks.md, N = 1,000, 2026-12-04). A probe is one GET of a few hundred bytes."""
APPLY_THREADS = 8
"""Writes of a wave (`apply_waves`) sent besides the one each reconcile worker sends itself, for all
workers together: a new ModelDeployment's first wave is five objects (the router's ServiceAccount,
Role, two RoleBindings and ConfigMap); a worker whose writes find the pool busy waits its turn."""
SERVER_POLL_SECONDS = 2.0
"""How soon an object with a server still loading (or a health probe running) is looked at again."""


@dataclass(frozen=True)
class Outcome:
    phase: str
    status_written: bool
    applied: int
    pruned: int
    requeue_after: float | None = None
    next_due: dt.datetime | None = None
    """When the plan's next timer is due (None: nothing timed): the object's daemon sleeps until then."""
    scaled: int = 0
    """Deployments whose replicas were patched."""
    changed: int = 0
    """Applies the API server acted on (a new resourceVersion): `applied` counts those sent, and an
    apply that changes nothing answers with the version it had."""

    @property
    def objects_written(self) -> bool:
        """Whether the pass changed what it observes (an object created, changed, scaled or pruned):
        its plan was made before, so the controller runs one more pass from what was written. An apply
        the server found nothing to do for is not a change: a follow-up would send it again, and again
        (no watch event told of it before either)."""
        return bool(self.changed or self.pruned or self.scaled)


@dataclass(frozen=True)
class Observation:
    owned: dict[str, list[dict[str, Any]]]
    deployments: list[ObservedDeployment]
    ready_endpoints: dict[str, list[str]]
    """Revision hash (or "router") -> "ip:port" of its ready pods (stream pods included: analysis reads
    their drift and prediction histograms like the REST pods')."""
    externally_scaled: frozenset[str] = frozenset()
    """Our serving Deployments that an HPA we did not make targets (the user's, KEDA's)."""
    stream_output_pods: dict[str, int] = field(default_factory=dict)
    """Revision hash -> stream pods in the output role that exist, terminating ones included."""
    servers_pending: bool = False
    """A server's report of what it loaded is still awaited (`deployments` carry the known ones)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _previous_status(body: dict[str, Any]) -> ModelDeploymentStatus:
    raw = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    try:
        return ModelDeploymentStatus.model_validate(raw)
    except ValueError:  # a status written by an older operator: start afresh rather than fail
        return ModelDeploymentStatus()


def status_patch(current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """A merge patch from `current` to `new` status (kopf's own field untouched), or None if equal."""
    current = {k: v for k, v in current.items() if k != "kopf"}
    if current == new:
        return None
    patch: dict[str, Any] = dict(new)
    for key in current:
        if key not in new:
            patch[key] = None  # merge patch: null removes a field
    return patch


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_crash_looping(pod: dict[str, Any]) -> bool:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if (
            waiting.get("reason") == "CrashLoopBackOff"
            or container.get("restartCount", 0) >= CRASH_LOOP_RESTARTS
        ):
            return True
    return False


def cached_kinds(owned_kinds: Sequence[tuple[str, str]]) -> tuple[CachedKind, ...]:
    """Everything `_observe` reads, as the caches hold it: the owned kinds, pods and ReplicaSets by the
    ModelDeployment label, and every HPA (a user's HPA carries none of our labels)."""
    kinds = [
        CachedKind(api_version, kind, "" if kind == "HorizontalPodAutoscaler" else INDEX_LABEL)
        for api_version, kind in owned_kinds
    ]
    return (*kinds, CachedKind("apps/v1", "ReplicaSet"), CachedKind("v1", "Pod"))


class Reconciler:
    def __init__(self, api: KubeApi, settings: OperatorSettings, cache: ClusterCache | None = None) -> None:
        self.api = api
        self.settings = settings
        self.cache = cache
        # Reads come from the informer caches when there are some (the operator), else from the API.
        self.reads: Lister = cache if cache is not None else api
        self._apply_pool = ThreadPoolExecutor(APPLY_THREADS, thread_name_prefix="apply")
        self.status_written: Callable[[dict[str, Any]], object] = lambda _obj: None
        """Told of the object a status write returned (the controller keeps it as the latest copy)."""
        # One per process: it keeps the previous scrape per target, and measures on a bounded pool.
        self.analysis = analysis_sources(
            allowed_prometheus=settings.prometheus_allowed_addresses,
            workers=settings.analysis_workers,
            deadline_seconds=settings.analysis_deadline_seconds,
            max_response_bytes=settings.analysis_max_response_bytes,
            allowed_joiner=settings.joiner_allowed_addresses,
        )
        # Golden-set replays (issue 15), off the reconcile lock like analysis; their own pool, so a
        # slow replay never holds up an analysis measurement.
        self.preflight_pool: MeasurementPool[PreflightStatus] = MeasurementPool(2, PREFLIGHT_DEADLINE_SECONDS)
        self.replayer = Replayer(new_client())
        # What each server loaded (issue 12): one health GET per server process, off the reconcile path.
        self.servers = ServerReports(
            new_client(),
            MeasurementPool(SERVER_PROBE_WORKERS, SERVER_PROBE_DEADLINE_SECONDS, max_jobs=SERVER_PROBE_JOBS),
        )
        self.options = BuildOptions(
            serving_image=settings.serving_image,
            router_image=settings.router_image,
            image_pull_policy=settings.image_pull_policy,
            router_cluster_role=settings.router_cluster_role,
            router_role_kind=settings.router_role_kind,
            router_service_account=None if settings.manage_router_rbac else settings.router_service_account,
            network_policy=settings.network_policy_options(),
        )
        self.pod_defaults = PodDefaults(
            serving=settings.serving_pod_defaults,
            router=settings.router_pod_defaults,
            pod_disruption_budget=settings.pod_disruption_budget_default,
        )
        # Kinds this operator creates and therefore lists and prunes (a namespaced install that does
        # not manage router RBAC may not even be allowed to list ServiceAccounts).
        self.owned_kinds = (
            OWNED_KINDS + NETWORK_POLICY_KINDS + (ROUTER_RBAC_KINDS if settings.manage_router_rbac else ())
        )

    @property
    def cached_kinds(self) -> tuple[CachedKind, ...]:
        return cached_kinds(self.owned_kinds)

    def reconcile(self, body: dict[str, Any]) -> Outcome:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            outcome = self._reconcile(body)
        except TransientApiError:
            RECONCILES.labels("transient_error").inc()
            RECONCILE_ERRORS.labels("transient").inc()
            raise
        except RejectedError:
            RECONCILES.labels("rejected").inc()
            RECONCILE_ERRORS.labels("rejected").inc()
            raise
        finally:
            RECONCILE_SECONDS.observe(time.perf_counter() - started)
            RECONCILE_CPU_SECONDS.observe(time.thread_time() - cpu)
        RECONCILES.labels("ok" if outcome.phase != "Failed" else "invalid").inc()
        return outcome

    def _reconcile(self, body: dict[str, Any]) -> Outcome:
        meta = body["metadata"]
        owner = ModelDeploymentRef.from_object(body)
        generation = meta.get("generation")
        previous = _previous_status(body)
        now = _now()

        # 1. parse: a spec the schema let through but the operator cannot act on is final until edited.
        try:
            errors = validate_name(owner.name)
            if errors:
                raise InvalidSpecError(errors)
            spec = parse_spec(body.get("spec") or {}, self.pod_defaults)
        except InvalidSpecError as invalid:
            RECONCILE_ERRORS.labels("invalid").inc()
            status = status_for_invalid_spec(
                invalid.messages, now=now, generation=generation, previous=previous
            )
            if previous.last_error is None or previous.last_error.message != str(invalid):
                self.api.event(body, "InvalidSpec", str(invalid), warning=True)
            command = parse_command(meta.get("annotations"))
            refused = with_command_refused(
                status, command, f"the spec is invalid; fix it first: {invalid}", now=now
            )
            if refused is not status and command is not None:
                self.api.event(
                    body, "CommandRejected", f"{command.action}: the spec is invalid", warning=True
                )
                status = refused
            return Outcome("Failed", self._write_status(body, status), 0, 0)

        try:
            return self._converge(body, owner, spec, previous, generation, now)
        except NamespaceTerminatingError:
            # The namespace is being deleted, this object with it: nothing to tell (an Event could not
            # even be created there), and nothing more to apply.
            raise
        except RejectedError as rejected:
            # Forbidden, or an object the API server refuses: say so on the object (once per distinct
            # message) and let the caller decide about retrying.
            failed = with_error(previous, "ApiRejected", str(rejected), now=now)
            if previous.last_error is None or previous.last_error.message != str(rejected):
                self.api.event(body, "ApiRejected", str(rejected), warning=True)
            try:
                self._write_status(body, failed)
            except TransientApiError as lost:
                # A conflict (someone wrote the object since it was read: their event queues a pass
                # anyway) or a 5xx must not turn the refusal into a transient error: retried with the
                # short backoff, the same refused request would be sent again up to retryLimit times,
                # and then nothing until the resync. The refusal stays what the controller acts on.
                log.info("status of %s/%s not written after a refusal: %s", owner.namespace, owner.name, lost)
            raise

    def _converge(
        self,
        body: dict[str, Any],
        owner: ModelDeploymentRef,
        spec: ModelDeploymentSpec,
        previous: ModelDeploymentStatus,
        generation: int | None,
        now: dt.datetime,
    ) -> Outcome:
        # 2. observe
        seen = self._observe(owner, spec)
        # 3. measure, only when the planner's analysis is due
        #    (off the reconcile path: None while the pool measures; this object is polled again soon)
        readings = self._measure(owner, spec, previous, seen, now)
        # 3b. preflight: the golden-set replay of each revision about to take traffic (also off-lock)
        preflight, replaying = self._preflight(owner, spec, previous, seen, now)
        # 4. plan (pure): which revisions run, their replicas and weights, events, the new status
        command = parse_command(body["metadata"].get("annotations"))
        # The front door callers go through (the built-in router): observed here, judged by the planner.
        front_door = bool(seen.ready_endpoints.get("router")) if spec.traffic.provider == "router" else None
        decided = plan(
            owner.name,
            spec,
            seen.deployments,
            readings or (),
            now,
            previous,
            command,
            generation=generation,
            front_door_ready=front_door,
            analysis_pending=readings is None,
            preflight=preflight,
        )
        if readings is None or replaying:  # a pool is measuring: come back for its results soon
            decided = _look_again(decided, now, ANALYSIS_POLL_SECONDS)
        if seen.servers_pending:  # a server is loading, or its health answer is on the way
            decided = _look_again(decided, now, SERVER_POLL_SECONDS)
        # 5. build (pure)
        state = desired_state(
            owner,
            spec,
            decided,
            options=self.options,
            generation=generation or 0,
            previous_router_table=_router_table(owner, seen),
            externally_scaled=seen.externally_scaled,
            stream_output_pods=seen.stream_output_pods,
        )
        if state.stream_handover_pending:  # pod deletions do not wake this object: look again soon
            decided = _look_again(decided, now, HANDOVER_POLL_SECONDS)
        # 6. apply, only what differs from the live object (idle: no write at all)
        live_objects = {
            (obj.get("kind"), obj["metadata"]["name"]): obj for objs in seen.owned.values() for obj in objs
        }
        applied = changed = 0
        for wave in apply_waves(state.manifests, live_objects.keys()):
            for sent, acted_on in self._apply_wave(wave, live_objects):
                applied += sent
                changed += acted_on
        scaled = sum(self._scale(owner, name, replicas, seen) for name, replicas in state.replica_patches)
        # 7. prune what nothing needs any more (only objects we control)
        pruned = self._prune(owner, state, seen)
        # 8. events, then 9. the one status write
        for event in decided.events:
            self.api.event(body, event.reason, event.message, warning=event.warning)
        status = decided.status.model_copy(
            update={"url": call_url(owner, spec.traffic, self.settings.cluster_domain)}
        )
        written = self._write_status(body, status)
        self._keep_baseline_of(owner, status)
        return Outcome(
            status.phase,
            written,
            applied,
            pruned,
            decided.requeue_after,
            decided.next_due,
            scaled=scaled,
            changed=changed,
        )

    def _apply_wave(
        self, wave: Sequence[dict[str, Any]], live_objects: dict[tuple[Any, str], dict[str, Any]]
    ) -> list[tuple[bool, bool]]:
        """Apply one wave (`apply_waves`), only what differs from the live object: (sent, acted on) per
        manifest. Its writes go out together, one on this thread and the rest on the apply pool; when
        one fails, the others of the wave still finish (no write outlives its pass) and the first
        failure in the wave's order is raised, so no later wave is written."""
        jobs: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        for desired in wave:
            manifest = with_applied_hash(desired)
            live = live_objects.get((manifest["kind"], manifest["metadata"]["name"]))
            if unchanged(manifest, live) and self._handover(manifest, live) is None:
                APPLY_SKIPPED.labels(manifest["kind"]).inc()
                continue
            jobs.append((manifest, live))
        if not jobs:
            return []
        others = [self._apply_pool.submit(self._apply_one, m, live) for m, live in jobs[1:]]
        results: list[tuple[bool, bool]] = []
        failure: BaseException | None = None
        try:
            results.append(self._apply_one(*jobs[0]))
        except Exception as error:
            failure = error
        for future in others:
            try:
                results.append(future.result())
            except Exception as error:
                failure = failure or error
        if failure is not None:
            raise failure
        return results

    def _handover(
        self, manifest: dict[str, Any], live: dict[str, Any] | None
    ) -> tuple[str, dict[str, Any]] | None:
        if manifest["kind"] != "Deployment":
            return None
        return build_replicas_handover(manifest, live, self.settings.field_manager)

    def _apply_one(self, manifest: dict[str, Any], live: dict[str, Any] | None) -> tuple[bool, bool]:
        """One changed manifest: (sent, acted on: a new resourceVersion, or a replicas handover)."""
        handover = self._handover(manifest, live)
        if handover is not None:  # (kept too: its watch event is ours, not a change)
            self._remember(self.api.apply(handover[1], field_manager=handover[0]))
        result = self.api.apply(manifest)
        self._remember(result)
        APPLIED_OBJECTS.labels(manifest["kind"]).inc()
        return True, handover is not None or live is None or _rv(result) != _rv(live)

    def _keep_baseline_of(self, owner: ModelDeploymentRef, status: ModelDeploymentStatus) -> None:
        """Drop the scrape baselines of every analysis target of this object but the rollout's under
        way in the status just written (none once it ended): each rollout's canary is a new target,
        and its baseline (a parsed scrape of its pods, over 1 MiB) outlived the rollout before."""
        subject = analysis_subject(status)
        keep = AnalysisTarget(owner.namespace, owner.name, *subject) if subject is not None else None
        self.analysis.retain(owner.namespace, owner.name, keep)

    def forget(self, namespace: str, name: str, uid: str) -> None:
        """The ModelDeployment is gone: what was kept for it goes (scrape baselines, server reports)."""
        self.analysis.retain(namespace, name, None)
        self.servers.forget(f"{namespace}/{uid}")

    def _remember(self, written: dict[str, Any] | None) -> None:
        if self.cache is not None and isinstance(written, dict):
            self.cache.remember(written)

    def _observe(self, owner: ModelDeploymentRef, spec: ModelDeploymentSpec) -> Observation:
        selector = f"{INDEX_LABEL}={owner.name}"
        uses_gateway = spec.traffic.provider == "gatewayAPI"
        owned = {
            kind: self._list_owned(api_version, kind, owner.namespace, selector, uses_gateway)
            for api_version, kind in self.owned_kinds
        }
        # Pods count (for readiness and the metrics analysis scrapes) only through the owner chain of
        # a Deployment this ModelDeployment controls, not by their labels alone.
        replica_sets = self.reads.list("apps/v1", "ReplicaSet", owner.namespace, selector)
        ours = [d for d in owned["Deployment"] if _controlled_by(d, owner)]
        all_pods = self.reads.list("v1", "Pod", owner.namespace, selector)
        pods = pods_owned_by(all_pods, replica_sets, ours)
        # The stream handover waits on every output-role pod by label, not through the owner chain: a
        # pruned Deployment's pods outlive it (background deletion) while they drain and commit.
        output_pods: dict[str, int] = defaultdict(int)
        for pod in all_pods:
            pod_labels = pod["metadata"].get("labels") or {}
            finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")  # no consumer left
            if (
                not finished
                and pod_labels.get(lbl.STREAM_ROLE_LABEL) == "output"
                and lbl.STREAM_REVISION_LABEL in pod_labels
            ):
                output_pods[pod_labels[lbl.STREAM_REVISION_LABEL]] += 1
        crash_looping: set[str] = set()
        endpoints: dict[str, list[str]] = defaultdict(list)
        servers = [server for pod in pods if (server := _server_pod(pod)) is not None]
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            key = (
                labels.get(lbl.REVISION_LABEL)
                or labels.get(lbl.STREAM_REVISION_LABEL)
                or ("router" if labels.get("app.kubernetes.io/component") == lbl.ROUTER_COMPONENT else None)
            )
            if key is None or pod["metadata"].get("deletionTimestamp"):
                continue
            if _pod_crash_looping(pod):
                crash_looping.add(key)
            ip = (pod.get("status") or {}).get("podIP")
            if ip and _pod_ready(pod):
                endpoints[key].append(f"{ip}:{SERVER_PORT}")
        # Every HPA of the namespace, not only ours: a user's (or KEDA's) HPA carries none of our labels.
        hpas = self.reads.list("autoscaling/v2", "HorizontalPodAutoscaler", owner.namespace, "")
        foreign = externally_scaled(hpas, [d["metadata"]["name"] for d in ours], owner.uid)
        deployments = [
            replace(o, crash_looping=o.revision in crash_looping, externally_scaled=o.name in foreign)
            for d in owned["Deployment"]
            if (o := ObservedDeployment.from_object(d))
        ]
        reports, pending = self.servers.observe(f"{owner.namespace}/{owner.uid}", servers)
        deployments = with_server_reports(deployments, reports)
        return Observation(owned, deployments, dict(endpoints), foreign, dict(output_pods), pending)

    def _measure(
        self,
        owner: ModelDeploymentRef,
        spec: ModelDeploymentSpec,
        previous: ModelDeploymentStatus,
        seen: Observation,
        now: dt.datetime,
    ) -> Sequence[CheckReading] | None:
        request = analysis_request(spec, previous, now)
        analysis = spec.rollout.analysis
        if request is None or analysis is None:
            return ()
        analysis = with_own_joiner(analysis, owner, spec)  # spec.effectiveness: the operator's joiner
        target = AnalysisTarget(
            namespace=owner.namespace,
            deployment=owner.name,
            variant=request.variant,
            canary_revision=request.canary_revision,
            stable_revision=request.stable_revision,
            canary_endpoints=tuple(seen.ready_endpoints.get(request.canary_revision, ())),
            stable_endpoints=tuple(seen.ready_endpoints.get(request.stable_revision or "", ())),
            router_endpoints=tuple(seen.ready_endpoints.get("router", ())),
            drift_window_seconds=spec.drift.window_seconds,
            own_joiner=own_joiner(owner, spec),
        )
        return self.analysis.measure(analysis, select_checks(analysis, request.checks), target)

    def _preflight(
        self,
        owner: ModelDeploymentRef,
        spec: ModelDeploymentSpec,
        previous: ModelDeploymentStatus,
        seen: Observation,
        now: dt.datetime,
    ) -> tuple[list[PreflightStatus], bool]:
        """The preflight result of every revision that needs one (final ones from status: a revision
        is replayed once), and whether one is still pending (poll again soon)."""
        results, pending = [], False
        for request in preflight_requests(owner.name, spec, previous, seen.deployments):
            result = self._preflight_one(owner, spec, request, seen, now)
            results.append(result)
            pending = pending or not result.final
        return results, pending

    def _preflight_one(
        self,
        owner: ModelDeploymentRef,
        spec: ModelDeploymentSpec,
        request: PreflightRequest,
        seen: Observation,
        now: dt.datetime,
    ) -> PreflightStatus:
        cached, settings = request.cached, spec.rollout.preflight
        if cached is not None and cached.final:
            return cached
        assert settings is not None  # preflight_requests() asks only when it is set
        attempts = cached.attempts if cached is not None else 0

        def pending(message: str) -> PreflightStatus:
            return PreflightStatus(
                variant=request.variant,
                revision=request.revision,
                stable_revision=request.stable_revision,
                result="Pending",
                message=message,
                attempts=attempts,
                finished_at=cached.finished_at if cached is not None else None,
            )

        endpoints = sorted(seen.ready_endpoints.get(request.revision, ()))
        if not endpoints:
            return pending(f"waiting for a ready pod of revision {request.revision}")
        if cached is not None and attempts and cached.finished_at is not None:
            retry_at = cached.finished_at + dt.timedelta(
                seconds=min(2.0**attempts, PREFLIGHT_RETRY_MAX_SECONDS)
            )
            if now < retry_at:
                return cached
        stable = sorted(seen.ready_endpoints.get(request.stable_revision, ()))
        target = ReplayTarget(
            model=owner.name,
            variant=request.variant,
            revision=request.revision,
            endpoint=endpoints[0],
            stable_revision=request.stable_revision,
            stable_endpoint=stable[0] if stable else None,
        )
        key = ("preflight", owner.namespace, owner.name, request.variant, request.revision)

        def timed_out(seconds: float) -> PreflightStatus:
            late = pending(f"the replay took longer than {seconds:g}s")
            return late.model_copy(
                update={"attempts": attempts + 1, "finished_at": now.replace(microsecond=0)}
            )

        result = self.preflight_pool.poll(
            key, lambda: self.replayer.run(target, settings, attempts), timed_out
        )
        if result is None:
            return pending("replaying the golden set")
        # Stamped with the reconcile's clock (the retry back-off compares it with this clock).
        return result.model_copy(update={"finished_at": now.replace(microsecond=0)})

    def _scale(self, owner: ModelDeploymentRef, name: str, replicas: int, seen: Observation) -> bool:
        current = next((d for d in seen.deployments if d.name == name), None)
        if current is None or current.replicas == replicas:
            return False  # gone (nothing to keep), or already right
        self._remember(self.api.patch(_DEPLOYMENT, owner.namespace, name, {"spec": {"replicas": replicas}}))
        return True

    def _prune(self, owner: ModelDeploymentRef, state: DesiredState, seen: Observation) -> int:
        pruned = 0
        for api_version, kind in self.owned_kinds:
            for obj in stale_objects(state, seen.owned[kind]):
                if not _controlled_by(obj, owner):
                    continue
                self.api.delete(
                    api_version, kind, owner.namespace, obj["metadata"]["name"], uid=obj["metadata"]["uid"]
                )
                pruned += 1
        return pruned

    def _list_owned(
        self, api_version: str, kind: str, namespace: str, selector: str, uses_gateway: bool
    ) -> list[dict[str, Any]]:
        try:
            return self.reads.list(api_version, kind, namespace, selector)
        except RejectedError as error:
            # Without the Gateway provider, HTTPRoutes may be unknown to the cluster (404) or not granted
            # to the operator (403, the chart's default): then there is no route of ours to prune.
            if kind == "HTTPRoute" and not uses_gateway and error.status in (403, 404):
                return []
            raise

    def _write_status(self, body: dict[str, Any], status: ModelDeploymentStatus) -> bool:
        patch = status_patch(body.get("status") or {}, status.to_patch())
        meta = body["metadata"]
        if patch is None:
            ROLLOUT_STATE.observe(meta["namespace"], meta["name"], status)
            return False
        # The status was planned from this very read of the object: write it only if it is still current,
        # so a reconcile working from an older copy can never set a rollout back.
        try:
            written = self.api.patch_status(
                _MODELDEPLOYMENT,
                meta["namespace"],
                meta["name"],
                patch,
                resource_version=meta.get("resourceVersion"),
            )
        except RejectedError as error:
            if error.status == 404 and f'"{meta["name"]}" not found' in str(error):
                # Deleted while this pass ran (its namespace going, most often): its DELETED event
                # forgets it. Not a refusal to retry in a minute, nor a warning per object.
                log.info("%s/%s is gone; status not written", meta["namespace"], meta["name"])
                return False
            raise
        if isinstance(written, dict):
            self.status_written(written)
        # Exported only once written: the metrics never tell a state the object does not hold.
        ROLLOUT_STATE.observe(meta["namespace"], meta["name"], status)
        return True


def _rv(obj: dict[str, Any] | None) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str((meta if isinstance(meta, dict) else {}).get("resourceVersion") or "")


def _look_again(decided: Plan, now: dt.datetime, seconds: float) -> Plan:
    """The plan with the object looked at again within `seconds` (its own timers kept if sooner)."""
    poll_at = now + dt.timedelta(seconds=seconds)
    return replace(
        decided,
        requeue_after=min(decided.requeue_after or seconds, seconds),
        next_due=min(decided.next_due, poll_at) if decided.next_due is not None else poll_at,
    )


def _server_pod(pod: dict[str, Any]) -> ServerPod | None:
    """A model server (REST) pod whose server container runs and has an address: one to ask what it
    loaded. Keyed by uid and restarts, so a restarted container (a new process) is asked again."""
    meta, status = pod["metadata"], pod.get("status") or {}
    revision = (meta.get("labels") or {}).get(lbl.REVISION_LABEL)
    ip, uid = status.get("podIP"), meta.get("uid")
    if revision is None or not ip or not uid or meta.get("deletionTimestamp"):
        return None
    for container in status.get("containerStatuses") or []:
        if container.get("name") == CONTAINER_NAME and "running" in (container.get("state") or {}):
            restarts = int(container.get("restartCount") or 0)
            return ServerPod((str(uid), restarts), revision, f"{ip}:{SERVER_PORT}")
    return None


def _router_table(owner: ModelDeploymentRef, seen: Observation) -> str | None:
    """The router table now in the router's ConfigMap (ours only), as written."""
    name = config_map_name(owner.name)
    for config_map in seen.owned.get("ConfigMap", []):
        if config_map["metadata"]["name"] == name and _controlled_by(config_map, owner):
            text = (config_map.get("data") or {}).get(CONFIG_KEY)
            return text if isinstance(text, str) else None
    return None


def _controlled_by(obj: dict[str, Any], owner: ModelDeploymentRef) -> bool:
    return any(
        ref.get("uid") == owner.uid and ref.get("controller")
        for ref in obj["metadata"].get("ownerReferences") or []
    )
