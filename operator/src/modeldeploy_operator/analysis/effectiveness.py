"""`effectiveness` checks: the new revision's quality on delayed labels, read from the label joiner.

The joiner (`modeldeploy joiner`, docs/effectiveness.md) joins labels that arrive later with the
predictions and serves `GET /v1/effectiveness`: per deployment, per window, per arm (variant,
revision) the labelled count, positives, AUC and accuracy. A check compares, in the rolling variant,
the canary (or preview) revision's arm with the stable revision's arm:

    value   = the worse end (lower bound) of the `confidence` interval of new - stable
    samples = the smaller arm's labelled count

so the planner's ordinary evaluation does the rest: Inconclusive below minSamples, Pass when the
value is at least `threshold.min`. "Promote when the new revision's AUC is not lower than the
stable's by more than 0.005 with at least 2,000 labels per arm" is
`{type: effectiveness, threshold: {min: -0.005}, minSamples: 2000}`.

Intervals (the arms are independent populations, so the variances add):
- AUC: Hanley & McNeil's variance from the AUC and the class counts,
  Var = [A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)] / (n1 n0), Q1 = A/(2-A), Q2 = 2A^2/(1+A)
  (the summary carries no per-row data for DeLong; for binormal-like scores the two agree closely);
- accuracy: Newcombe's hybrid score interval from the two Wilson intervals.

The joiner's address comes from the spec and is used only when the operator's allow-list allows it
(`joiner_allowed_addresses`, the same rules as Prometheus: analysis/allowlist.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from statistics import NormalDist

import httpx
from pydantic import ValidationError

from modeldeploy_contract.effectiveness import (
    ArmQuality,
    DeploymentWindow,
    EffectivenessSummary,
    newcombe_interval,
)
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.spec import Check, EffectivenessCheck, JoinerSource

from .allowlist import AddressPolicy
from .builtin import no_data
from .fetch import FetchError, FetchLimits, fetch, new_client, sanitize
from .target import AnalysisTarget

SUMMARY_PATH = "/v1/effectiveness"
SETTING_HINT = "the Helm value analysis.joiner.allowedAddresses"
MAX_SUMMARY_BYTES = 4 * 1024 * 1024


def auc_variance(auc: float, positives: int, negatives: int) -> float | None:
    """Hanley & McNeil (1982) variance of an AUC; None without both classes."""
    if positives < 1 or negatives < 1:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    a2 = auc * auc
    return (auc * (1 - auc) + (positives - 1) * (q1 - a2) + (negatives - 1) * (q2 - a2)) / (
        positives * negatives
    )


def difference_interval(
    metric: str, stable: ArmQuality, new: ArmQuality, confidence: float
) -> tuple[float, float, float] | None:
    """(new - stable, lower, upper) of `metric`, or None when it is not defined for both arms."""
    if metric == "auc":
        if stable.auc is None or new.auc is None or stable.positives is None or new.positives is None:
            return None
        vs = auc_variance(stable.auc, stable.positives, stable.labelled - stable.positives)
        vn = auc_variance(new.auc, new.positives, new.labelled - new.positives)
        if vs is None or vn is None:
            return None
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        d, se = new.auc - stable.auc, math.sqrt(max(vs, 0.0) + max(vn, 0.0))
        return d, d - z * se, d + z * se
    if stable.accuracy is None or new.accuracy is None or not stable.labelled or not new.labelled:
        return None
    hits_s, hits_n = round(stable.accuracy * stable.labelled), round(new.accuracy * new.labelled)
    lower, upper = newcombe_interval(hits_s, stable.labelled, hits_n, new.labelled, confidence)
    return new.accuracy - stable.accuracy, lower, upper


def pick_window(windows: Sequence[DeploymentWindow], seconds: float) -> DeploymentWindow | None:
    """The smallest window at least `seconds` long, else the longest there is."""
    if not windows:
        return None
    longer = [w for w in windows if w.window_seconds >= seconds]
    if longer:
        return min(longer, key=lambda w: w.window_seconds)
    return max(windows, key=lambda w: w.window_seconds)


def reading_from_summary(
    check: Check, summary: EffectivenessSummary, target: AnalysisTarget, at: datetime
) -> CheckReading:
    """The reading of an effectiveness check from the joiner's summary. Pure."""
    settings = check.effectiveness or EffectivenessCheck()
    deployment = next((d for d in summary.deployments if d.deployment == target.deployment), None)
    if deployment is None:
        return no_data(check, at, f"the joiner has no predictions of {target.deployment}")
    window = pick_window(deployment.windows, settings.window_seconds)
    if window is None:
        return no_data(check, at, "the joiner reports no window")

    def arm(revision: str | None) -> ArmQuality | None:
        found = (a.quality for a in window.arms if a.variant == target.variant and a.revision == revision)
        return next(found, None)

    new, stable = arm(target.canary_revision), arm(target.stable_revision)
    if new is None or stable is None:
        missing = "new" if new is None else "stable"
        return no_data(check, at, f"no labelled predictions of the {missing} revision in the joiner yet")
    samples = min(new.labelled, stable.labelled)
    found = difference_interval(settings.metric, stable, new, settings.confidence)
    if found is None:
        return CheckReading(
            check.name,
            None,
            samples,
            at,
            f"{settings.metric} not defined yet (both classes needed in each arm)",
        )
    diff, lower, upper = found
    detail = (
        f"{settings.metric} new - stable {diff:+.4f}, {settings.confidence:.0%} interval "
        f"[{lower:+.4f}, {upper:+.4f}] over {window.window_seconds:g}s; labels new {new.labelled}, "
        f"stable {stable.labelled}"
    )
    return CheckReading(check.name, lower, samples, at, detail)


class JoinerReader:
    """Reads the joiner's summary (bounded) and turns it into effectiveness readings."""

    def __init__(
        self,
        policy: AddressPolicy,
        client_factory: Callable[[], httpx.Client] = new_client,
        max_bytes: int = MAX_SUMMARY_BYTES,
    ) -> None:
        self.policy = policy
        self.client_factory = client_factory
        self.max_bytes = max_bytes

    def read(
        self, checks: Sequence[Check], source: JoinerSource | None, target: AnalysisTarget, at: datetime
    ) -> list[CheckReading]:
        if source is None:
            return [no_data(c, at, "effectiveness checks need spec.rollout.analysis.joiner") for c in checks]
        own = target.own_joiner is not None and source.address == target.own_joiner
        refusal = None if own else self.policy.refusal(source.address)
        if refusal is not None:
            return [no_data(c, at, refusal) for c in checks]
        url = source.address.rstrip("/") + SUMMARY_PATH
        limits = FetchLimits(deadline_seconds=source.timeout_seconds, max_bytes=self.max_bytes)
        try:
            with self.client_factory() as client:
                status, body = fetch(client, url, limits, params={"fresh": "1"})
        except FetchError as exc:
            return [no_data(c, at, f"joiner: {exc}") for c in checks]
        if status != 200:
            return [no_data(c, at, f"joiner answered HTTP {status}") for c in checks]
        try:
            summary = EffectivenessSummary.model_validate_json(body)
        except ValidationError as exc:
            why = sanitize(str(exc.errors()[0]["msg"]))
            return [no_data(c, at, f"joiner answer not understood: {why}") for c in checks]
        return [reading_from_summary(c, summary, target, at) for c in checks]
