"""Live prediction traffic through a ModelDeployment's router, recorded request by request.

There is no kube-proxy on the local cluster, so the generator finds the router's ready pods from the
stable Service's EndpointSlices (refreshed continuously, as a kube-proxy would) and calls them directly.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import httpx
from kubernetes import client


@dataclass(frozen=True)
class Result:
    at: float
    status: int  # 0: no answer (connection error, timeout)
    revision: str
    user: str


def ready_endpoints(api: client.ApiClient, namespace: str, service: str) -> list[str]:
    found = []
    for eps in (
        client.DiscoveryV1Api(api)
        .list_namespaced_endpoint_slice(namespace, label_selector=f"kubernetes.io/service-name={service}")
        .items
    ):
        port = eps.ports[0].port if eps.ports else 8080
        for endpoint in eps.endpoints or []:
            if endpoint.conditions.ready:
                found += [f"http://{address}:{port}" for address in endpoint.addresses]
    return found


class Traffic:
    """Sends about `rate` V2 single-row requests per second, each with an `X-User-Id` of `users` keys."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        rows: list[list[float | None]],
        rate: float = 60,
        users: int = 500,
        padding: int = 0,
    ) -> None:
        self.api, self.namespace, self.name, self.rows = api, namespace, name, rows
        self.rate, self.users = rate, users
        # Extra request parameters, to make bodies `padding` bytes larger.
        self.parameters = {"padding": "x" * padding} if padding else None
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._endpoints: list[str] = []
        self._threads = [
            threading.Thread(target=self._refresh, daemon=True),
            threading.Thread(target=self._send, daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _refresh(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._endpoints = ready_endpoints(self.api, self.namespace, self.name)
            except Exception:
                continue

    def _send(self) -> None:
        rng = random.Random(7)
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                endpoints = self._endpoints
                if endpoints:
                    user = f"user-{rng.randrange(self.users)}"
                    row = self.rows[rng.randrange(len(self.rows))]
                    body: dict[str, object] = {
                        "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, len(row)], "data": row}]
                    }
                    if self.parameters:
                        body["parameters"] = self.parameters
                    try:
                        answer = http.post(
                            f"{rng.choice(endpoints)}/v2/models/{self.name}/infer",
                            json=body,
                            headers={"X-User-Id": user},
                        )
                        self.results.append(
                            Result(
                                time.time(),
                                answer.status_code,
                                answer.headers.get("x-modeldeploy-revision", ""),
                                user,
                            )
                        )
                    except httpx.HTTPError:
                        self.results.append(Result(time.time(), 0, "", user))
                self._stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def failures(self, since: float = 0.0, revision: str | None = None) -> list[Result]:
        return [
            r
            for r in self.results
            if r.at >= since and r.status != 200 and (revision is None or r.revision in (revision, ""))
        ]
