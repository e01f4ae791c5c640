"""A container's environment and command line, resolved as the kubelet does: literal values,
`$(VAR)` references, downward-API fields, ConfigMap and Secret keys, envFrom."""

from __future__ import annotations

import base64
import re
from typing import Any

from kubernetes import client

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as they are, `$$` escapes a `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REF.sub(replace, text)


def _field(pod: Any, path: str) -> str:
    meta, spec, status = pod.metadata, pod.spec, pod.status
    label = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if label:
        source = (meta.labels if label.group(1) == "labels" else meta.annotations) or {}
        return str(source.get(label.group(2), ""))
    values = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": spec.node_name,
        "spec.serviceAccountName": spec.service_account_name,
        "status.hostIP": status.host_ip if status else "",
        "status.podIP": status.pod_ip if status else "",
        "status.podIPs": status.pod_ip if status else "",
    }
    if path not in values:
        raise ValueError(f"unsupported fieldRef {path}")
    return str(values[path] or "")


def _resource(container: Any, ref: Any) -> str:
    kind, _, name = ref.resource.partition(".")
    limits = getattr(container.resources, kind, None) or {} if container.resources else {}
    return str(limits.get(name, "0"))


def _key_ref(core: client.CoreV1Api, namespace: str, ref: Any, secret: bool) -> str | None:
    try:
        if secret:
            obj = core.read_namespaced_secret(ref.name, namespace)
            data = obj.data or {}
            return base64.b64decode(data[ref.key]).decode() if ref.key in data else None
        cm = core.read_namespaced_config_map(ref.name, namespace)
        return (cm.data or {}).get(ref.key)
    except client.ApiException as error:
        if error.status == 404 and ref.optional:
            return None
        raise


def container_env(core: client.CoreV1Api, pod: Any, container: Any, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    namespace = pod.metadata.namespace
    for source in container.env_from or []:
        prefix = source.prefix or ""
        if source.config_map_ref:
            cm = core.read_namespaced_config_map(source.config_map_ref.name, namespace)
            env.update({prefix + k: v for k, v in (cm.data or {}).items()})
        if source.secret_ref:
            sec = core.read_namespaced_secret(source.secret_ref.name, namespace)
            env.update({prefix + k: base64.b64decode(v).decode() for k, v in (sec.data or {}).items()})
    for var in container.env or []:
        value: str | None
        if var.value_from is None:
            value = expand(var.value or "", env)
        elif var.value_from.field_ref:
            value = _field(pod, var.value_from.field_ref.field_path)
        elif var.value_from.resource_field_ref:
            value = _resource(container, var.value_from.resource_field_ref)
        elif var.value_from.config_map_key_ref:
            value = _key_ref(core, namespace, var.value_from.config_map_key_ref, secret=False)
        elif var.value_from.secret_key_ref:
            value = _key_ref(core, namespace, var.value_from.secret_key_ref, secret=True)
        else:
            value = None
        if value is not None:
            env[var.name] = value
    return env
