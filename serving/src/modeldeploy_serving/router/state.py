"""The routing snapshot: config + ready backends, immutable, swapped atomically.

A request reads `RouterState.snapshot` once and uses that object throughout, so a config reload
or an EndpointSlice change never affects requests already in flight, and nothing is locked.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from modeldeploy_contract.router_config import ArmConfig, RouterConfig
from modeldeploy_contract.slots import SLOT_COUNT
from modeldeploy_contract.weights import BASIS_POINTS_TOTAL, bp_to_percent
from modeldeploy_serving.router.assignment import ArmWeight, Assignment, RoundRobin, key_hash
from modeldeploy_serving.router.metrics import RouterMetrics

log = logging.getLogger("modeldeploy.router")

BackendLookup = Callable[[ArmConfig], tuple[str, ...]]
"""Ready "host:port" backends of an arm (from EndpointSlices, a file, ...)."""


@dataclass(frozen=True)
class Arm:
    config: ArmConfig
    backends: RoundRobin
    response_headers: tuple[tuple[bytes, bytes], ...]
    """Headers echoing the arm on every response it serves."""

    @property
    def ready(self) -> bool:
        return bool(self.backends.backends)


@dataclass(frozen=True)
class Route:
    """The outcome of routing one request: an arm, or why there is none."""

    arm: Arm | None
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    config: RouterConfig
    arms: tuple[Arm, ...]
    assignment: Assignment
    available: frozenset[int]
    """Arms with weight and at least one ready backend."""
    shadow: Arm | None
    mirror: Arm | None = field(default=None)
    """The rollout mirror's arm (`RouterConfig.mirror`), or None."""
    sticky_header: bytes | None = field(default=None)
    pin_header: bytes | None = field(default=None)

    @property
    def ready(self) -> bool:
        """Serving is possible: at least one weighted arm has a ready backend."""
        return bool(self.available)

    def route(self, key: str | None, pinned_variant: str | None = None) -> Route:
        """The arm for a request with this sticky key (None: weighted random)."""
        if key is not None:
            slot, u = key_hash(key, self.config.sticky.salt if self.config.sticky else "")
        else:
            slot, u = random.randrange(SLOT_COUNT), random.random()  # noqa: S311 (not crypto)
        index = self.assignment.pick(slot, u, pinned_variant)
        if index is None:
            what = f"variant {pinned_variant!r}" if pinned_variant else "any arm"
            return Route(None, f"no traffic weight configured for {what}")
        if index in self.available:
            return Route(self.arms[index])
        arm_id = self.arms[index].config.arm_id
        if self.config.when_arm_unavailable == "reject":
            return Route(None, f"arm {arm_id} has no ready backend")
        fallback = self.assignment.fallback(index, self.available, u)
        if fallback is None:
            return Route(None, f"no arm has a ready backend (wanted {arm_id})")
        return Route(self.arms[fallback])


def _echo_headers(arm: ArmConfig) -> tuple[tuple[bytes, bytes], ...]:
    headers = [
        (b"x-modeldeploy-variant", arm.variant.encode()),
        (b"x-modeldeploy-revision", arm.revision.encode()),
    ]
    if arm.model_version:
        headers.append((b"x-modeldeploy-model-version", arm.model_version.encode()))
    return tuple(headers)


def build_assignment(config: RouterConfig) -> Assignment:
    """The slot table and arm weights of a routing table (decoded once per table, not per request)."""
    return Assignment(config.slot_arms(), [ArmWeight(a.variant, a.weight_bp) for a in config.arms])


def build_snapshot(
    config: RouterConfig, backends_of: BackendLookup, assignment: Assignment | None = None
) -> Snapshot:
    """`assignment`: `build_assignment(config)` when already built (a backend change keeps the table)."""
    arms = tuple(Arm(a, RoundRobin(a.endpoints or backends_of(a)), _echo_headers(a)) for a in config.arms)
    available = frozenset(i for i, arm in enumerate(arms) if arm.ready and arm.config.weight_bp > 0)
    shadow = None
    if config.shadow is not None:
        wanted = f"{config.shadow.variant}/{config.shadow.revision}"
        shadow = next(arm for arm in arms if arm.config.arm_id == wanted)
    mirror = None
    if config.mirror is not None:
        wanted = f"{config.mirror.variant}/{config.mirror.revision}"
        mirror = next(arm for arm in arms if arm.config.arm_id == wanted)
    sticky = config.sticky
    return Snapshot(
        config=config,
        arms=arms,
        assignment=assignment or build_assignment(config),
        available=available,
        shadow=shadow,
        mirror=mirror,
        sticky_header=sticky.header.lower().encode() if sticky and sticky.header else None,
        pin_header=config.pin_header.lower().encode() if config.pin_header else None,
    )


class RouterState:
    """Holds the current snapshot; rebuilt whenever the config or the backends change."""

    def __init__(self, backends_of: BackendLookup, metrics: RouterMetrics) -> None:
        self._backends_of = backends_of
        self._metrics = metrics
        self.config: RouterConfig | None = None
        self._assignment: Assignment | None = None
        self.snapshot: Snapshot | None = None
        self.on_backends_changed: Callable[[set[str]], None] = lambda _addresses: None

    def set_config(self, config: RouterConfig) -> None:
        self.config, self._assignment = config, build_assignment(config)
        self._metrics.config_generation.set(config.generation)
        self._metrics.config_reloads.labels("applied").inc()
        log.info("routing table applied: generation %d, %s", config.generation, _describe(config))
        self.rebuild()

    def reject_config(self, reason: str) -> None:
        """An invalid table keeps the previous one in force."""
        self._metrics.config_reloads.labels("invalid").inc()
        log.error("routing table rejected, keeping the previous one: %s", reason)

    def rebuild(self) -> None:
        if self.config is None:
            return
        snapshot = build_snapshot(self.config, self._backends_of, self._assignment)
        previous, self.snapshot = self.snapshot, snapshot
        for arm in snapshot.arms:
            labels = (arm.config.variant, arm.config.revision)
            self._metrics.ready_backends.labels(*labels).set(len(arm.backends.backends))
            self._metrics.arm_weight.labels(*labels).set(arm.config.weight_bp / BASIS_POINTS_TOTAL)
        if previous is not None:
            self._forget_removed_arms(previous, snapshot)
        self.on_backends_changed({b for arm in snapshot.arms for b in arm.backends.backends})

    def _forget_removed_arms(self, previous: Snapshot, current: Snapshot) -> None:
        # Gauges of arms that left the table would otherwise report stale values forever.
        current_ids = {arm.config.arm_id for arm in current.arms}
        for arm in previous.arms:
            if arm.config.arm_id not in current_ids:
                for gauge in (self._metrics.ready_backends, self._metrics.arm_weight):
                    gauge.remove(arm.config.variant, arm.config.revision)


def _describe(config: RouterConfig) -> str:
    return ", ".join(f"{a.arm_id}={bp_to_percent(a.weight_bp):g}%" for a in config.arms)


def endpoints_lookup(by_service: Mapping[str, tuple[str, ...]]) -> BackendLookup:
    """A lookup over a plain mapping service -> ready addresses (tests, the endpoints file)."""
    return lambda arm: by_service.get(arm.service or "", ())
