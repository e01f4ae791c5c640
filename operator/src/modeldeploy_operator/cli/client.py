"""The plugin's window on the API server: read a ModelDeployment and its Events, annotate it.

A Protocol so that the commands and their tests do not need a cluster; `KubeClient` is the real one
(the official client, configured from a kubeconfig like kubectl).
"""

from __future__ import annotations

from typing import Any, Protocol

from modeldeploy_operator.domain.resource import GROUP, KIND, PLURAL, VERSION


class NotFoundError(LookupError):
    """The ModelDeployment does not exist."""


class Cluster(Protocol):
    def get(self, namespace: str, name: str) -> dict[str, Any]: ...

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None: ...

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]: ...


class KubeClient:
    """Cluster backed by the official kubernetes client."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
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

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            body: dict[str, Any] = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except self._exception as error:
            if error.status == 404:
                raise NotFoundError(
                    f'modeldeployment "{name}" not found in namespace "{namespace}"'
                ) from error
            raise
        return body

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        # The client sends a dict patch to a custom object as a JSON merge patch.
        self._custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
        result = self._core.list_namespaced_event(namespace, field_selector=selector)
        return [self._core.api_client.sanitize_for_serialization(e) for e in result.items]
