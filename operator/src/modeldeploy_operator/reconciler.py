"""One reconcile of one ModelDeployment: an ordered list of small idempotent steps ending in one
status write. Level-triggered: it recomputes everything from the object and what exists, so running it
twice changes nothing, and an owned object someone edited or deleted is put back.

    parse -> observe -> decide (pure) -> apply -> prune -> status
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain import labels as lbl
from modeldeploy_operator.domain.desired_state import (
    OWNED_KINDS,
    BuildOptions,
    DesiredState,
    desired_state,
    stale_objects,
)
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.resource import API_VERSION, KIND, ModelDeploymentRef
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status import compute_status, status_for_invalid_spec, with_error
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus
from modeldeploy_operator.domain.validation import InvalidSpecError, parse_spec, validate_name
from modeldeploy_operator.k8s.api import KubeApi, RejectedError, TransientApiError
from modeldeploy_operator.k8s.kinds import kind_of
from modeldeploy_operator.metrics import APPLIED_OBJECTS, RECONCILE_ERRORS, RECONCILE_SECONDS, RECONCILES

log = logging.getLogger("modeldeploy.reconcile")
_MODELDEPLOYMENT = kind_of(API_VERSION, KIND)


@dataclass(frozen=True)
class Outcome:
    phase: str
    status_written: bool
    applied: int
    pruned: int


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


class Reconciler:
    def __init__(self, api: KubeApi, settings: OperatorSettings) -> None:
        self.api = api
        self.settings = settings
        self.options = BuildOptions(
            serving_image=settings.serving_image,
            router_image=settings.router_image,
            image_pull_policy=settings.image_pull_policy,
            router_cluster_role=settings.router_cluster_role,
            router_service_account=None if settings.manage_router_rbac else settings.router_service_account,
        )

    def reconcile(self, body: dict[str, Any]) -> Outcome:
        started = time.perf_counter()
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
            spec = parse_spec(body.get("spec") or {})
        except InvalidSpecError as invalid:
            RECONCILE_ERRORS.labels("invalid").inc()
            status = status_for_invalid_spec(
                invalid.messages, now=now, generation=generation, previous=previous
            )
            same_error = previous.last_error is not None and previous.last_error.message == str(invalid)
            if not same_error:
                self.api.event(body, "InvalidSpec", str(invalid), warning=True)
            written = self._write_status(body, status)
            return Outcome("Failed", written, 0, 0)

        try:
            state, observed, pruned = self._converge(owner, spec, generation or 0)
        except RejectedError as rejected:
            # Forbidden, or an object the API server refuses: say so on the object (once per distinct
            # message) and let the caller decide about retrying.
            failed = with_error(previous, "ApiRejected", str(rejected), now=now)
            if previous.last_error is None or previous.last_error.message != str(rejected):
                self.api.event(body, "ApiRejected", str(rejected), warning=True)
            self._write_status(body, failed)
            raise

        # 6. status: one write, only when something changed.
        # Status speaks of the desired revisions: while an old one still serves, Progressing is True.
        status = compute_status(owner.name, spec, observed, now=now, generation=generation, previous=previous)
        written = self._write_status(body, status)
        if status.phase != previous.phase and written:
            self.api.event(body, f"Phase{status.phase}", status.message or f"phase is {status.phase}")
        return Outcome(status.phase, written, len(state.manifests), pruned)

    def _converge(
        self, owner: ModelDeploymentRef, spec: ModelDeploymentSpec, generation: int
    ) -> tuple[DesiredState, list[ObservedDeployment], int]:
        # 2. observe
        selector = f"{lbl.DEPLOYMENT_LABEL}={owner.name}"
        uses_gateway = spec.traffic.provider == "gatewayAPI"
        owned = {
            kind: self._list_owned(api_version, kind, owner.namespace, selector, uses_gateway)
            for api_version, kind in OWNED_KINDS
        }
        observed = [o for d in owned["Deployment"] if (o := ObservedDeployment.from_object(d))]

        # 3. decide (pure)
        state = desired_state(owner, spec, observed, options=self.options, generation=generation)

        # 4. apply
        for manifest in state.manifests:
            self.api.apply(manifest)
            APPLIED_OBJECTS.labels(manifest["kind"]).inc()

        # 5. prune what no desired or serving revision needs (only objects we own by controller ref).
        pruned = 0
        for api_version, kind in OWNED_KINDS:
            for obj in stale_objects(state, owned[kind]):
                if not _controlled_by(obj, owner):
                    continue
                self.api.delete(
                    api_version, kind, owner.namespace, obj["metadata"]["name"], uid=obj["metadata"]["uid"]
                )
                pruned += 1
        return state, observed, pruned

    def _list_owned(
        self, api_version: str, kind: str, namespace: str, selector: str, uses_gateway: bool
    ) -> list[dict[str, Any]]:
        try:
            return self.api.list(api_version, kind, namespace, selector)
        except RejectedError as error:
            # Without the Gateway provider, HTTPRoutes may be unknown to the cluster (404) or not granted
            # to the operator (403, the chart's default): then there is no route of ours to prune.
            if kind == "HTTPRoute" and not uses_gateway and error.status in (403, 404):
                return []
            raise

    def _write_status(self, body: dict[str, Any], status: ModelDeploymentStatus) -> bool:
        patch = status_patch(body.get("status") or {}, status.to_patch())
        if patch is None:
            return False
        meta = body["metadata"]
        self.api.patch_status(_MODELDEPLOYMENT, meta["namespace"], meta["name"], patch)
        return True


def _controlled_by(obj: dict[str, Any], owner: ModelDeploymentRef) -> bool:
    return any(
        ref.get("uid") == owner.uid and ref.get("controller")
        for ref in obj["metadata"].get("ownerReferences") or []
    )
