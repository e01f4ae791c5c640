"""What analysis measures: the canary (or preview) revision of one variant, against its stable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnalysisTarget:
    namespace: str
    deployment: str
    """Name of the ModelDeployment."""
    variant: str
    canary_revision: str
    """Revision name as in the pods' modeldeploy.io/revision label and the router table's arms."""
    stable_revision: str | None = None
    canary_endpoints: tuple[str, ...] = ()
    """`ip:port` of the ready model-server pods of the canary revision (for the built-in scrape)."""
    stable_endpoints: tuple[str, ...] = ()
    router_endpoints: tuple[str, ...] = ()
    """`ip:port` of the ready router pods; empty with the Gateway API provider."""
    drift_window_seconds: float = 60.0
    own_joiner: str | None = None
    """The base URL of the label joiner the operator runs for this ModelDeployment (spec.effectiveness):
    read without an allow-list entry, since the operator made it."""
    """spec.drift.windowSeconds: a drift window closes at most this long after its first row."""

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Identity of a measurement series: readings of the same key continue one another."""
        stable = self.stable_revision or ""
        return (self.namespace, self.deployment, self.variant, self.canary_revision, stable)

    def drift_lookback_seconds(self, window_seconds: float) -> float:
        """How old a closed drift window may be and still count: one analysis interval plus one
        drift window, so that steady traffic always closes a window inside it."""
        return window_seconds + self.drift_window_seconds
