"""A pod's volumes, materialised as folders under the pod's state folder.

Supported: emptyDir, configMap, secret, downwardAPI and projected (serviceAccountToken, configMap,
secret, downwardAPI sources) — which covers the `kube-api-access-*` volume that the ServiceAccount
admission plugin adds to every pod. Tokens come from the TokenRequest API, bound to the pod, and are
renewed at 80% of their lifetime, as the kubelet does.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from modeldeploy_testcluster.processnode.envvars import _field


class UnsupportedVolumeError(ValueError):
    pass


def _write(folder: Path, relative: str, content: bytes, mode: int | None) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    tmp.chmod(mode if mode is not None else 0o644)
    tmp.replace(path)


def _items(data: dict[str, bytes], items: Any) -> dict[str, bytes]:
    if not items:
        return data
    return {item.path: data[item.key] for item in items if item.key in data}


class PodVolumes:
    """Materialises one pod's volumes and keeps its service-account tokens fresh."""

    def __init__(self, core: client.CoreV1Api, pod: Any, root: Path) -> None:
        self.core = core
        self.pod = pod
        self.root = root
        self.paths: dict[str, Path] = {}
        self._token_renew_at: float = float("inf")

    def materialize(self) -> None:
        self._token_renew_at = float("inf")
        for volume in self.pod.spec.volumes or []:
            folder = self.root / volume.name
            folder.mkdir(parents=True, exist_ok=True)
            self.paths[volume.name] = folder
            self._fill(volume, folder)

    def renew_tokens_if_due(self) -> None:
        if time.monotonic() >= self._token_renew_at:
            self.materialize()

    def _fill(self, volume: Any, folder: Path) -> None:
        if volume.empty_dir is not None:
            return
        if volume.config_map is not None:
            self._write_all(
                folder,
                self._config_map(volume.config_map.name, volume.config_map.items, volume.config_map.optional),
                volume.config_map.default_mode,
            )
        elif volume.secret is not None:
            self._write_all(
                folder,
                self._secret(volume.secret.secret_name, volume.secret.items, volume.secret.optional),
                volume.secret.default_mode,
            )
        elif volume.downward_api is not None:
            self._write_all(
                folder, self._downward(volume.downward_api.items), volume.downward_api.default_mode
            )
        elif volume.projected is not None:
            for source in volume.projected.sources or []:
                self._write_all(folder, self._projected_source(source), volume.projected.default_mode)
        else:
            raise UnsupportedVolumeError(
                f"volume {volume.name}: only emptyDir, configMap, secret, downwardAPI and "
                "projected volumes can be emulated on the process node"
            )

    def _write_all(self, folder: Path, files: dict[str, bytes], mode: int | None) -> None:
        for relative, content in files.items():
            _write(folder, relative, content, mode)

    def _config_map(self, name: str, items: Any, optional: bool | None) -> dict[str, bytes]:
        try:
            cm = self.core.read_namespaced_config_map(name, self.pod.metadata.namespace)
        except client.ApiException as error:
            if error.status == 404 and optional:
                return {}
            raise
        data = {k: v.encode() for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return _items(data, items)

    def _secret(self, name: str, items: Any, optional: bool | None) -> dict[str, bytes]:
        try:
            secret = self.core.read_namespaced_secret(name, self.pod.metadata.namespace)
        except client.ApiException as error:
            if error.status == 404 and optional:
                return {}
            raise
        return _items({k: base64.b64decode(v) for k, v in (secret.data or {}).items()}, items)

    def _downward(self, items: Any) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for item in items or []:
            if item.field_ref is None:
                raise UnsupportedVolumeError("downwardAPI resourceFieldRef is not emulated")
            files[item.path] = _field(self.pod, item.field_ref.field_path).encode()
        return files

    def _projected_source(self, source: Any) -> dict[str, bytes]:
        if source.service_account_token is not None:
            return {source.service_account_token.path: self._token(source.service_account_token)}
        if source.config_map is not None:
            return self._config_map(
                source.config_map.name, source.config_map.items, source.config_map.optional
            )
        if source.secret is not None:
            return self._secret(source.secret.name, source.secret.items, source.secret.optional)
        if source.downward_api is not None:
            return self._downward(source.downward_api.items)
        raise UnsupportedVolumeError("projected volume source is not emulated")

    def _token(self, spec: Any) -> bytes:
        expiration = spec.expiration_seconds or 3600
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [spec.audience] if spec.audience else None,
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod.metadata.name,
                    "uid": self.pod.metadata.uid,
                },
            },
        }
        response = self.core.create_namespaced_service_account_token(
            self.pod.spec.service_account_name or "default", self.pod.metadata.namespace, body
        )
        self._token_renew_at = min(self._token_renew_at, time.monotonic() + 0.8 * expiration)
        return str(response.status.token).encode()
