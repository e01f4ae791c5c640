"""ModelDeployment objects written by hand (as the API server returns them) and a fake cluster, for
the plugin's own tests: no operator code, as the plugin has none."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

from modeldeploy_contract.commands import COMMAND_ANNOTATION, parse_command
from modeldeploy_kubectl.client import WatchEvent, not_found

T0 = "2026-01-02T03:04:00Z"
URL = "http://churn.ml.svc.cluster.local:8080/v2/models/churn"
STEPS = [
    {"setWeight": 20},
    {"pause": {"duration": "1m"}},
    {"analysis": {"duration": "2m", "checks": ["errors"]}},
    {"setWeight": 50},
    {"pause": {}},
]


def _history(number: int, hash_: str, version: str, outcome: str) -> dict[str, Any]:
    return {
        "revision": number,
        "hash": hash_,
        "variant": "default",
        "modelVersion": version,
        "modelURI": f"s3://models/churn/v{version}",
        "sha256": "ab" * 32,
        "createdAt": T0,
        "outcome": outcome,
    }


def ready_body(name: str = "churn", namespace: str = "ml") -> dict[str, Any]:
    """v1 serving, no rollout."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": T0, "resourceVersion": "1"},
        "spec": {
            "model": {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1"},
            "rollout": {"strategy": "Canary", "steps": STEPS},
        },
        "status": {
            "phase": "Ready",
            "modelVersion": "1",
            "ready": "2/2",
            "replicas": 2,
            "readyReplicas": 2,
            "url": URL.replace("churn.ml", f"{name}.{namespace}").replace("models/churn", f"models/{name}"),
            "stableRevision": "aaaa111111",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastTransitionTime": T0,
                    "reason": "Serving",
                    "message": "",
                }
            ],
            "variants": [
                {
                    "name": "default",
                    "weight": 100,
                    "revision": "aaaa111111",
                    "revisions": [
                        {
                            "revision": "aaaa111111",
                            "role": "stable",
                            "weight": 100,
                            "replicas": 2,
                            "readyReplicas": 2,
                            "number": 1,
                            "modelVersion": "1",
                        }
                    ],
                }
            ],
            "history": [_history(1, "aaaa111111", "1", "Promoted")],
            "kopf": {"progress": {}},
        },
    }


def canary_body() -> dict[str, Any]:
    """v2 at 20% during the analysis step (step 3 of 5), one check failing once."""
    body = ready_body()
    status = body["status"]
    status.update(
        {
            "phase": "Progressing",
            "message": "analysis of revision 2",
            "ready": "3/3",
            "canaryRevision": "bbbb222222",
            "rolloutVariant": "default",
            "currentStepIndex": 2,
            "canaryWeight": 20,
            "analysis": {
                "revision": "bbbb222222",
                "lastRunAt": "2026-01-02T03:06:00Z",
                "checks": [
                    {
                        "name": "errors",
                        "result": "Pass",
                        "measurements": [
                            {
                                "time": "2026-01-02T03:05:30Z",
                                "value": 0.012,
                                "samples": 480,
                                "result": "Pass",
                            },
                            {"time": "2026-01-02T03:06:00Z", "value": 0.01, "samples": 500, "result": "Pass"},
                        ],
                    },
                    {
                        "name": "latency",
                        "result": "Fail",
                        "failures": 1,
                        "measurements": [
                            {
                                "time": "2026-01-02T03:06:00Z",
                                "value": 0.93,
                                "samples": 500,
                                "result": "Fail",
                                "message": "p99 above 0.5",
                            }
                        ],
                    },
                ],
            },
        }
    )
    status["variants"][0]["revisions"] = [
        {
            "revision": "aaaa111111",
            "role": "stable",
            "weight": 80,
            "replicas": 2,
            "readyReplicas": 2,
            "number": 1,
            "modelVersion": "1",
        },
        {
            "revision": "bbbb222222",
            "role": "canary",
            "weight": 20,
            "replicas": 1,
            "readyReplicas": 1,
            "number": 2,
            "modelVersion": "2",
        },
    ]
    status["history"].append(_history(2, "bbbb222222", "2", "Progressing"))
    return body


class FakeCluster:
    """ModelDeployments by (namespace, name). A command patch is answered with `answer` (a
    CommandResult, or None for an operator that never answers); `frames` are what a watch sees
    after the current object (then the watch ends, as at its timeout)."""

    def __init__(
        self,
        *bodies: dict[str, Any],
        answer: str | None = "Applied",
        message: str = "done",
        frames: Sequence[WatchEvent] = (),
        interrupt_watch: bool = False,
        effectiveness: bytes | Exception = b"{}",
    ) -> None:
        self.objects = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in bodies}
        self.answer, self.message = answer, message
        self.frames = list(frames)
        self.interrupt_watch = interrupt_watch
        self.patches: list[dict[str, Any]] = []
        self.watched: list[tuple[str, str, float | None]] = []
        self.listed: list[str | None] = []
        self.summary = effectiveness
        self.summaries_read: list[tuple[str, str]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.objects[(namespace, name)])
        except KeyError:
            raise not_found(namespace, name) from None

    def list_all(self, namespace: str | None) -> list[dict[str, Any]]:
        self.listed.append(namespace)
        return [copy.deepcopy(b) for (ns, _), b in self.objects.items() if namespace in (None, ns)]

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        stored = self.objects[(namespace, name)]
        self.patches.append(body)
        stored["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        command = parse_command(stored["metadata"]["annotations"])
        if self.answer is not None and command is not None:
            stored["status"]["lastCommand"] = {
                "id": command.id,
                "action": command.action,
                "result": self.answer,
                "message": self.message,
                "time": T0,
            }

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [{"lastTimestamp": T0, "type": "Warning", "reason": "AnalysisFailed", "message": "latency"}]

    def effectiveness(self, namespace: str, name: str) -> bytes:
        self.summaries_read.append((namespace, name))
        if isinstance(self.summary, Exception):
            raise self.summary
        return self.summary

    def watch(self, namespace: str, name: str, timeout: float | None) -> Iterator[WatchEvent]:
        self.watched.append((namespace, name, timeout))
        yield "ADDED", self.get(namespace, name)
        yield from self.frames
        if self.interrupt_watch:
            raise KeyboardInterrupt


def annotation_of(patch: dict[str, Any]) -> str:
    return str(patch["metadata"]["annotations"][COMMAND_ANNOTATION])
