"""The router's Prometheus metrics, in a registry of its own.

Labels are bounded: variant and revision (a handful per ModelDeployment), a status class, and a
few fixed reasons/outcomes. Never keys, paths or addresses.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ARM = ("variant", "revision")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "modeldeploy_router_requests",
            "Requests answered through an arm, by HTTP status (`code`, e.g. 200, as the server spells it).",
            [*ARM, "code"],
            registry=r,
        )
        self.errors = Counter(
            "modeldeploy_router_errors",
            "Requests the router answered itself with an error: reason is no_backend, connect, "
            "timeout or bad_response.",
            [*ARM, "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "modeldeploy_router_request_duration_seconds",
            "Time from the request's arrival to the full upstream response, per arm.",
            ARM,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "modeldeploy_router_retries",
            "Requests sent again after a safe failure.",
            [*ARM, "reason"],
            registry=r,
        )
        self.refused = Counter(
            "modeldeploy_router_refused",
            "Requests refused before any backend saw them: reason is body_too_large, client_gone "
            "(disconnected mid-body, nothing forwarded), overloaded (concurrency bound) or "
            "over_budget (request byte budget).",
            ["reason"],
            registry=r,
        )
        self.prediction_log = Counter(
            "modeldeploy_router_prediction_log_records",
            "The router's prediction-log records by outcome: written, dropped (buffer full) or failed "
            "(the sink refused them).",
            ["outcome"],
            registry=r,
        )
        self.ready_backends = Gauge(
            "modeldeploy_router_ready_backends", "Ready backends known per arm.", ARM, registry=r
        )
        self.arm_weight = Gauge(
            "modeldeploy_router_arm_weight_ratio",
            "Configured share of traffic per arm, 0-1 (the table's basis points / 10000).",
            ARM,
            registry=r,
        )
        self.buffered_bytes = Gauge(
            "modeldeploy_router_buffered_bytes",
            "Request, response and shadow-copy bytes the router holds now (bounded by max_buffered_bytes).",
            registry=r,
        )
        self.config_generation = Gauge(
            "modeldeploy_router_config_generation",
            "ModelDeployment generation of the routing table in use.",
            registry=r,
        )
        self.config_reloads = Counter(
            "modeldeploy_router_config_reloads",
            "Routing table loads by outcome (applied, invalid).",
            ["outcome"],
            registry=r,
        )
        self.shadow_requests = Counter(
            "modeldeploy_router_shadow_requests",
            "Shadow copies by outcome: ok, error (non-2xx or transport), timeout, dropped (saturated).",
            [*ARM, "outcome"],
            registry=r,
        )
        self.shadow_score_difference = Histogram(
            "modeldeploy_router_shadow_score_difference",
            "Absolute difference between the primary's and the shadow's first score.",
            ARM,
            buckets=SCORE_DIFF_BUCKETS,
            registry=r,
        )
        self.shadow_label_agreement = Counter(
            "modeldeploy_router_shadow_label_agreement",
            "Shadow answers whose predicted label agrees (agree) or not (disagree) with the primary's.",
            [*ARM, "result"],
            registry=r,
        )
