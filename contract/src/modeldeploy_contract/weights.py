"""Traffic weights in one unit from the operator's plan to the router: integer basis points.

A basis point (bp) is 1/100 of a percent; all traffic is `BASIS_POINTS_TOTAL` = 10,000 bp. Integers,
so a variant at 10 % whose canary gets 5 % of it has exactly 50 bp, and sums need no tolerance.

Where the unit changes, once: the CRD's fields are whole percents because that is what users write
(`spec.variants[].weight`, `setWeight`), and the rollout planner reasons in the same percents (a
variant's weight, a revision's share of its variant). When the operator turns its plan into traffic
arms (`desired_state`), `arm_weight_bp` converts each (variant %, revision % of the variant) pair to
basis points of all traffic. From there on everything carries basis points: the operator's `Arm`,
the router table (`ArmConfig.weight_bp`, and its slot table: one slot per basis point), the router,
its `modeldeploy_router_arm_weight_ratio` gauge (over BASIS_POINTS_TOTAL), and the Gateway API
HTTPRoute's weights.
`bp_to_percent` exists only to show a weight to a person (logs).

Worked examples (the table tests in tests/unit/router/test_weights.py repeat them):

    variant %   revision % of the variant   arm_weight_bp   bp_to_percent
    100         100                         10000           100.0
    100         25   (canary step 25 %)      2500            25.0
    50          10   (canary in variant a)   500             5.0
    10          5                            50              0.5
    33          67                           2211            22.11
    0           100  (shadow-only variant)   0               0.0
"""

from __future__ import annotations

BASIS_POINTS_TOTAL = 10_000
"""All traffic, in basis points (100 % = 10,000 bp)."""
PERCENT_TOTAL = 100


def arm_weight_bp(variant_percent: int, revision_percent: int) -> int:
    """Basis points of all traffic for a revision holding `revision_percent` of a variant that holds
    `variant_percent` of all traffic: their product, exact (both are whole percents, 0..100).

    >>> arm_weight_bp(50, 10)
    500
    >>> arm_weight_bp(33, 67)
    2211
    """
    for name, value in (("variant", variant_percent), ("revision", revision_percent)):
        if not 0 <= value <= PERCENT_TOTAL or isinstance(value, bool):
            raise ValueError(f"{name} weight {value!r} is not a whole percent in 0..100")
    return variant_percent * revision_percent


def bp_to_percent(weight_bp: int) -> float:
    """A weight as a percent of all traffic, for people (logs): 2211 bp -> 22.11.

    >>> bp_to_percent(50)
    0.5
    """
    if not 0 <= weight_bp <= BASIS_POINTS_TOTAL:
        raise ValueError(f"weight {weight_bp!r} bp is not in 0..{BASIS_POINTS_TOTAL}")
    return weight_bp / (BASIS_POINTS_TOTAL / PERCENT_TOTAL)
