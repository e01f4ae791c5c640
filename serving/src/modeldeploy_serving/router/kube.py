"""A minimal list-and-watch client for the Kubernetes API (in-cluster ServiceAccount).

The router needs two read-only watches (its ConfigMap, the EndpointSlices of its namespace); the
official client is synchronous and heavy, so this speaks the watch protocol over httpx directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

log = logging.getLogger("modeldeploy.router.kube")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WATCH_SECONDS = 300

Objects = Mapping[str, Mapping[str, Any]]
"""Current objects of a watch, by metadata.name."""


class KubeApi:
    """Authenticated GETs against the API server; the token file is re-read on every call
    because bound ServiceAccount tokens rotate."""

    def __init__(self, client: httpx.AsyncClient, token_file: Path | None = None) -> None:
        self._client = client
        self._token_file = token_file

    @classmethod
    def in_cluster(cls) -> KubeApi:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        client = httpx.AsyncClient(
            base_url=f"https://{host}:{port}",
            verify=str(SERVICE_ACCOUNT / "ca.crt"),
            timeout=httpx.Timeout(10.0, read=WATCH_SECONDS + 30.0),
        )
        return cls(client, SERVICE_ACCOUNT / "token")

    def _headers(self) -> dict[str, str]:
        if self._token_file is None:
            return {}
        return {"Authorization": f"Bearer {self._token_file.read_text().strip()}"}

    async def list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        response = await self._client.get(path, params=dict(params), headers=self._headers())
        response.raise_for_status()
        doc: dict[str, Any] = orjson.loads(response.content)
        return doc

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        query = {
            **params,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async with self._client.stream("GET", path, params=query, headers=self._headers()) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.strip():
                    yield orjson.loads(line)

    async def aclose(self) -> None:
        await self._client.aclose()


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


async def informer(
    api: KubeApi,
    path: str,
    params: Mapping[str, str],
    on_change: Callable[[Objects], None],
    *,
    backoff_seconds: float = 1.0,
    max_backoff_seconds: float = 30.0,
) -> None:
    """List, then watch from the list's resourceVersion, forever; `on_change` receives the full
    current set after the list and after every event. Failures re-list after a backoff."""
    backoff = backoff_seconds
    while True:
        try:
            listed = await api.list(path, params)
            objects = {item["metadata"]["name"]: item for item in listed.get("items") or []}
            on_change(dict(objects))
            version = listed["metadata"]["resourceVersion"]
            backoff = backoff_seconds
            while True:  # one watch call ends after WATCH_SECONDS; resume from the last version
                version = await _watch_once(
                    api, path, {**params, "resourceVersion": version}, objects, on_change
                )
        except asyncio.CancelledError:
            raise
        except WatchExpiredError:
            log.info("watch of %s expired; listing again", path)
            continue
        except Exception as exc:
            log.warning("watch of %s failed (%s); retrying in %.0f s", path, exc, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_seconds)


async def _watch_once(
    api: KubeApi,
    path: str,
    params: Mapping[str, str],
    objects: dict[str, Mapping[str, Any]],
    on_change: Callable[[Objects], None],
) -> str:
    version = params["resourceVersion"]
    async for event in api.watch(path, params):
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpiredError
            raise RuntimeError(f"watch error: {obj.get('message')}")
        version = obj.get("metadata", {}).get("resourceVersion", version)
        if kind == "BOOKMARK":
            continue
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            objects.pop(name, None)
        else:
            objects[name] = obj
        on_change(dict(objects))
    return version


def namespace_of_pod() -> str:
    """The pod's own namespace, from its ServiceAccount mount."""
    return (SERVICE_ACCOUNT / "namespace").read_text().strip()
