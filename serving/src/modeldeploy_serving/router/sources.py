"""Where the routing table and the ready backends come from.

Backends: EndpointSlices of the namespace (in a cluster), or a JSON file (standalone, tests).
Routing table: a ConfigMap (in a cluster), or a file. Each source is a coroutine that runs for the
router's lifetime and calls back into `RouterState` on every change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from modeldeploy_contract.router_config import ArmConfig, RouterConfig
from modeldeploy_serving.router.kube import KubeApi, Objects, informer
from modeldeploy_serving.router.state import RouterState

log = logging.getLogger("modeldeploy.router")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _slice_port(ports: Any, port_name: str | None) -> int | None:
    if not isinstance(ports, list) or not ports:
        return None
    for port in ports:
        if port_name is None or port.get("name") == port_name:
            number = port.get("port")
            return number if isinstance(number, int) else None
    return None


def ready_endpoints(slices: Objects, arm: ArmConfig) -> tuple[str, ...]:
    """Ready "ip:port" of the arm's Service, from EndpointSlice objects (discovery.k8s.io/v1).

    An endpoint counts when conditions.ready is true or absent (the API says nil means ready);
    terminating pods have ready=false. Sorted, so that equal sets compare equal.
    """
    found: set[str] = set()
    for obj in slices.values():
        labels = obj.get("metadata", {}).get("labels") or {}
        if labels.get(SERVICE_NAME_LABEL) != arm.service:
            continue
        port = _slice_port(obj.get("ports"), arm.port_name)
        if port is None:
            continue
        for endpoint in obj.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses = endpoint.get("addresses") or []
            if addresses:  # all addresses of one endpoint are the same pod: use the first
                found.add(_address(addresses[0], port))
    return tuple(sorted(found))


class EndpointSliceSource:
    """All EndpointSlices of a namespace that belong to a Service, kept by a watch."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self._slices: Objects = {}

    def lookup(self, arm: ArmConfig) -> tuple[str, ...]:
        return ready_endpoints(self._slices, arm)

    async def run(self, state: RouterState) -> None:
        def changed(slices: Objects) -> None:
            self._slices = slices
            state.rebuild()

        path = f"/apis/discovery.k8s.io/v1/namespaces/{self._namespace}/endpointslices"
        await informer(self._api, path, {"labelSelector": SERVICE_NAME_LABEL}, changed)


class EndpointsFileSource:
    """Backends from a JSON file: {"<service>": [{"address": "host:port", "ready": true}, ...]}.

    The stand-in for EndpointSlices when there is no cluster (local runs, tests); the same
    readiness rule applies (absent "ready" means ready).
    """

    def __init__(self, path: Path, poll_seconds: float) -> None:
        self._path = path
        self._poll_seconds = poll_seconds
        self._by_service: dict[str, tuple[str, ...]] = {}
        self._seen: Fingerprint | None = None

    def lookup(self, arm: ArmConfig) -> tuple[str, ...]:
        return self._by_service.get(arm.service or "", ())

    def load_now(self) -> None:
        """Read the file once, before serving."""
        self._seen = fingerprint(self._path)
        self.load(self._path.read_bytes())

    def load(self, text: bytes) -> None:
        doc = orjson.loads(text)
        self._by_service = {
            service: tuple(sorted(e["address"] for e in endpoints if e.get("ready", True) is not False))
            for service, endpoints in doc.items()
        }

    async def run(self, state: RouterState) -> None:
        def changed(text: bytes) -> None:
            try:
                self.load(text)
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
                log.error("endpoints file %s is invalid, keeping the previous backends: %s", self._path, exc)
                return
            state.rebuild()

        await poll_file(self._path, self._poll_seconds, changed, self._seen)


def apply_config_text(state: RouterState, text: str | bytes, origin: str) -> None:
    """Validate and apply a routing table; an invalid one keeps the previous table."""
    try:
        config = RouterConfig.from_json(text)
    except ValidationError as exc:
        state.reject_config(f"{origin}: {exc}")
        return
    state.set_config(config)


class FileConfigSource:
    def __init__(self, path: Path, poll_seconds: float) -> None:
        self._path = path
        self._poll_seconds = poll_seconds
        self._seen: Fingerprint | None = None

    def load_now(self, state: RouterState) -> None:
        """Apply the file once, before serving, so the router starts ready when it can."""
        self._seen = fingerprint(self._path)
        apply_config_text(state, self._path.read_bytes(), str(self._path))

    async def run(self, state: RouterState) -> None:
        await poll_file(
            self._path,
            self._poll_seconds,
            lambda text: apply_config_text(state, text, str(self._path)),
            self._seen,
        )


class ConfigMapConfigSource:
    """The routing table in ConfigMap `name`, key `key`, kept by a watch on that one object."""

    def __init__(self, api: KubeApi, namespace: str, name: str, key: str) -> None:
        self._api = api
        self._namespace = namespace
        self._name = name
        self._key = key
        self._last: str | None = None

    async def run(self, state: RouterState) -> None:
        def changed(objects: Objects) -> None:
            obj = objects.get(self._name)
            text = ((obj or {}).get("data") or {}).get(self._key)
            if text is None:
                log.warning("ConfigMap %s/%s has no key %s yet", self._namespace, self._name, self._key)
                return
            if text != self._last:  # resyncs and unrelated edits do not re-apply an equal table
                self._last = text
                apply_config_text(state, text, f"ConfigMap {self._namespace}/{self._name}")

        path = f"/api/v1/namespaces/{self._namespace}/configmaps"
        await informer(self._api, path, {"fieldSelector": f"metadata.name={self._name}"}, changed)


Fingerprint = tuple[int, int, int]


def fingerprint(path: Path) -> Fingerprint:
    stat = path.stat()
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


async def poll_file(
    path: Path, every_seconds: float, on_change: Callable[[bytes], None], seen: Fingerprint | None = None
) -> None:
    """Call `on_change(content)` whenever the file's (mtime, size, inode) differs from `seen`.
    Polling: no extra dependency, and it also sees ConfigMap volume updates (a symlink swap)."""
    while True:
        try:
            current = fingerprint(path)
            if current != seen:
                content = path.read_bytes()
                seen = current
                on_change(content)
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
        await asyncio.sleep(every_seconds)


class StaticOnlySource:
    """No discovery: only arms with static `endpoints` have backends (standalone use)."""

    def lookup(self, arm: ArmConfig) -> tuple[str, ...]:
        return ()

    async def run(self, state: RouterState) -> None:
        await asyncio.Event().wait()
