"""The plugin's window on the API server: read, list and watch ModelDeployments, read their Events,
annotate them.

A Protocol so that the commands and their tests do not need a cluster; `KubeClient` is the real one
(the official client, configured from a kubeconfig like kubectl).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any, Protocol

from modeldeploy_contract.joiner_settings import SUMMARY_PATH, joiner_service_name
from modeldeploy_contract.resource import GROUP, KIND, PLURAL, VERSION

WatchEvent = tuple[str, dict[str, Any]]
"""(type, object): type is ADDED, MODIFIED or DELETED, as the API server's watch says."""

MAX_WATCH_SECONDS = 300


class NotFoundError(LookupError):
    """The ModelDeployment does not exist."""


class ApiError(RuntimeError):
    """The API server could not be reached or refused the request (not a missing object)."""


class Cluster(Protocol):
    def get(self, namespace: str, name: str) -> dict[str, Any]: ...

    def list_all(self, namespace: str | None) -> list[dict[str, Any]]:
        """ModelDeployments of one namespace, or of all (None)."""
        ...

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None: ...

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]: ...

    def watch(self, namespace: str, name: str, timeout: float | None) -> Iterator[WatchEvent]:
        """The object's current state (ADDED), then every change, until `timeout` seconds (None: no end)."""
        ...

    def effectiveness(self, namespace: str, name: str) -> bytes:
        """The label joiner's summary (GET /v1/effectiveness) of a ModelDeployment with
        spec.effectiveness, through the API server's service proxy; raises ApiError."""
        ...


def not_found(namespace: str, name: str) -> NotFoundError:
    return NotFoundError(f'modeldeployment "{name}" not found in namespace "{namespace}"')


class KubeClient:
    """Cluster backed by the official kubernetes client."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config

        try:
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError) as error:
            raise ApiError(f"kubeconfig: {error}") from error
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._exception = client.ApiException

    @staticmethod
    def default_namespace(kubeconfig: str | None, context: str | None) -> str:
        """The namespace of the kubeconfig context, as kubectl picks it."""
        from kubernetes import config

        try:
            contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError):
            return "default"
        chosen = next((c for c in contexts if c["name"] == context), current) if context else current
        return str((chosen or {}).get("context", {}).get("namespace") or "default")

    def _api_error(self, error: Exception) -> ApiError:
        status = getattr(error, "status", None)
        reason = getattr(error, "reason", None) or str(error)
        return ApiError(f"API server: {status} {reason}" if status else f"API server: {reason}")

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            body: dict[str, Any] = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except self._exception as error:
            if error.status == 404:
                raise not_found(namespace, name) from error
            raise self._api_error(error) from error
        return body

    def list_all(self, namespace: str | None) -> list[dict[str, Any]]:
        try:
            if namespace is None:
                result = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            else:
                result = self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        except self._exception as error:
            raise self._api_error(error) from error
        return list(result.get("items") or [])

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        # The client sends a dict patch to a custom object as a JSON merge patch.
        try:
            self._custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
        except self._exception as error:
            if error.status == 404:
                raise not_found(namespace, name) from error
            raise self._api_error(error) from error

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
        try:
            result = self._core.list_namespaced_event(namespace, field_selector=selector)
        except self._exception:
            return []  # Events are a courtesy: a user allowed to read the object but not Events still sees it
        return [self._core.api_client.sanitize_for_serialization(e) for e in result.items]

    def effectiveness(self, namespace: str, name: str) -> bytes:
        # Through the API server (services/proxy), as kubectl would: the plugin runs outside the
        # cluster and needs no port-forward; the user needs `get services/proxy` in the namespace.
        service = f"{joiner_service_name(name)}:http"
        try:
            response = self._core.connect_get_namespaced_service_proxy_with_path(
                service, namespace, SUMMARY_PATH.lstrip("/"), _preload_content=False, _request_timeout=10
            )
        except self._exception as error:
            raise self._api_error(error) from error
        except Exception as error:  # urllib3's timeouts and connection errors
            raise ApiError(f"label joiner: {error}") from error
        data: bytes = response.data
        return data

    def watch(self, namespace: str, name: str, timeout: float | None) -> Iterator[WatchEvent]:
        """A watch on this one object (a field selector on its name), resumed from the last resource
        version when the server closes it, started afresh when that version is too old (410)."""
        from kubernetes import watch

        deadline = None if timeout is None else time.monotonic() + timeout
        version: str | None = None
        while True:
            remaining = MAX_WATCH_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return
            options: dict[str, Any] = {
                "field_selector": f"metadata.name={name}",
                "timeout_seconds": max(1, math.ceil(min(remaining, MAX_WATCH_SECONDS))),
            }
            if version is not None:
                options["resource_version"] = version
            stream = watch.Watch().stream(
                self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, **options
            )
            try:
                for event in stream:
                    kind, body = str(event["type"]), event["object"]
                    if kind == "ERROR":
                        if body.get("code") == 410:
                            version = None
                            break
                        raise ApiError(f"watch: {body.get('message', body)}")
                    version = body.get("metadata", {}).get("resourceVersion", version)
                    yield kind, body
            except self._exception as error:
                if error.status != 410:
                    raise self._api_error(error) from error
                version = None
