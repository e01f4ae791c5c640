"""Generate the CRD schema of spec.pods (serving and router pod settings) and write it into the CRD.

The pod settings embed Kubernetes types (tolerations, affinity, topology spread constraints, env,
volumes, volume mounts). Writing their schemas by hand is long and error-prone; this script derives
them from the official Python client's models (field names, types, required fields, descriptions),
bounds every string and list (the CRD's CEL cost budget needs maxLength/maxItems everywhere) and
adds the operator's own rules (CEL) on top. The rest of the CRD stays hand-written.

    .venv/bin/python hack/crd_pod_schema.py          # rewrite spec.pods in both CRD copies and the
                                                     # chart's values.schema.json `defaults`
    .venv/bin/python hack/crd_pod_schema.py --check  # exit 1 when the CRDs are out of date

Only fields kube-apiserver v1.34 knows are emitted (the client is newer: see SKIPPED_FIELDS), and
volumes only of the kinds listed in VOLUME_SOURCES (no hostPath: a ModelDeployment must not be a way
to read the node's disk).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import yaml

from modeldeploy_contract.model_store import PVC_MOUNT_ROOT, PVC_VOLUME

REPO = Path(__file__).resolve().parent.parent
CRD_PATHS = (
    REPO / "crds" / "modeldeploy.io_modeldeployments.yaml",
    REPO / "charts" / "modeldeploy" / "crds" / "modeldeploy.io_modeldeployments.yaml",
)
MAX_STRING = 1024
MAX_ITEMS = 32
MAX_PROPERTIES = 64
LONG_STRINGS = {("V1EnvVar", "value"): 32768}
SKIPPED_FIELDS = {
    # Newer than kube-apiserver v1.34: server-side apply of a Deployment carrying them would fail.
    ("V1VolumeMount", "bind_mount_options"),
    ("V1EnvVarSource", "file_key_ref"),
    ("V1VolumeProjection", "cluster_trust_bundle"),
    ("V1VolumeProjection", "pod_certificate"),
    ("V1EmptyDirVolumeSource", "mode"),
    *((cls, "default_user") for cls in ("V1ConfigMapVolumeSource", "V1DownwardAPIVolumeSource")),
    *((cls, "default_user") for cls in ("V1ProjectedVolumeSource", "V1SecretVolumeSource")),
    *((cls, "user") for cls in ("V1KeyToPath", "V1DownwardAPIVolumeFile", "V1ServiceAccountTokenProjection")),
}
ENUMS = {
    ("V1Toleration", "operator"): ["Exists", "Equal"],
    ("V1Toleration", "effect"): ["NoSchedule", "PreferNoSchedule", "NoExecute"],
    ("V1TopologySpreadConstraint", "when_unsatisfiable"): ["DoNotSchedule", "ScheduleAnyway"],
    ("V1NodeSelectorRequirement", "operator"): ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
    ("V1LabelSelectorRequirement", "operator"): ["In", "NotIn", "Exists", "DoesNotExist"],
}
VOLUME_SOURCES = (
    "config_map",
    "secret",
    "empty_dir",
    "persistent_volume_claim",
    "projected",
    "csi",
    "downward_api",
)
QUANTITY_PATTERN = (
    "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    "([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$"
)
# Labels and annotations the operator sets on the pods it makes (domain/labels.py, manifests.py).
OWNED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
)
# The operator's own volumes and mounts (domain/manifests.py; a pvc:// model store's: the contract's).
OWNED_VOLUMES = ("model-cache", PVC_VOLUME, "tmp")
OWNED_MOUNT_PREFIXES = ("/var/cache/modeldeploy", PVC_MOUNT_ROOT, "/tmp")  # noqa: S108 - names, not files we write
DNS_SUBDOMAIN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _short(text: str | None) -> str:
    """The first sentence of a Kubernetes field description (the CRD stays readable)."""
    text = " ".join((text or "").split())
    first = re.split(r"(?<=[a-z0-9)])\. ", text, maxsplit=1)[0].rstrip(".")
    return (first[:297] + "...") if len(first) > 300 else first + "."


def _camel(name: str, cls: type) -> str:
    field = cls.model_fields[name]
    return str(field.serialization_alias or name)


def _type_schema(type_name: str, owner: str, field: str) -> dict[str, Any]:  # noqa: PLR0911 - one per type
    if type_name == "str":
        return {
            "type": "string",
            "maxLength": LONG_STRINGS.get((owner, field), MAX_STRING),
            **({"enum": ENUMS[(owner, field)]} if (owner, field) in ENUMS else {}),
        }
    if type_name == "int":
        return {"type": "integer"}
    if type_name == "bool":
        return {"type": "boolean"}
    if type_name == "float":
        return {"type": "number"}
    if type_name == "object":  # IntOrString / Quantity: the structural form the API server allows
        out: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
        if "size" in field or "limit" in field or field == "divisor":
            out["pattern"] = QUANTITY_PATTERN
        out["x-kubernetes-int-or-string"] = True
        return out
    if type_name.startswith("List["):
        return {
            "type": "array",
            "maxItems": MAX_ITEMS,
            "items": _type_schema(type_name[5:-1], owner, field),
        }
    if type_name.startswith("Dict[str, "):
        value = _type_schema(type_name[len("Dict[str, ") : -1], owner, field)
        return {"type": "object", "maxProperties": MAX_PROPERTIES, "additionalProperties": value}
    return model_schema(getattr(k8s, type_name))


def model_schema(cls: type, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The structural schema of one client model, with descriptions, bounds and required fields."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, type_name in cls.openapi_types.items():  # type: ignore[attr-defined]
        if (cls.__name__, name) in SKIPPED_FIELDS or (only is not None and name not in only):
            continue
        field = cls.model_fields[name]  # type: ignore[attr-defined]
        typed = _type_schema(type_name, cls.__name__, name)
        schema = {
            "description": _short(field.description),
            **{k: v for k, v in typed.items() if k != "description"},
        }
        wire = _camel(name, cls)
        properties[wire] = schema
        if field.is_required():
            required.append(wire)
    doc = (cls.__doc__ or "").split("Attributes:")[0]
    out: dict[str, Any] = {"type": "object", "description": _short(doc)}
    if required:
        out["required"] = required
    out["properties"] = properties
    return out


def _string_map(description: str, *, key_length: int, value_length: int, count: int) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "maxProperties": count,
        "x-kubernetes-validations": [
            {
                "rule": f"self.all(k, k.size() <= {key_length})",
                "message": f"keys are at most {key_length} characters",
            }
        ],
        "additionalProperties": {"type": "string", "maxLength": value_length},
    }


def _resources() -> dict[str, Any]:
    quantity = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    }
    return {
        "type": "object",
        "description": "Container resources (requests and limits, as in a Pod spec).",
        "properties": {
            "requests": {
                "type": "object",
                "description": "Resources reserved, e.g. cpu 50m, memory 64Mi.",
                "maxProperties": 16,
                "additionalProperties": dict(quantity),
            },
            "limits": {
                "type": "object",
                "description": "Resource ceilings, e.g. memory 256Mi.",
                "maxProperties": 16,
                "additionalProperties": dict(quantity),
            },
        },
    }


def pod_settings_schema(component: str) -> dict[str, Any]:
    """spec.pods.<component>: what a user may set on the pods of one component."""
    owned_labels = ", ".join(f"'{label}'" for label in OWNED_LABELS)
    labels = _string_map(
        "Extra labels on the pods (not on the Deployment's selector).",
        key_length=317,
        value_length=63,
        count=32,
    )
    labels["x-kubernetes-validations"].append(
        {
            "rule": f"self.all(k, !k.startsWith('modeldeploy.io/') && !(k in [{owned_labels}]))",
            "message": (
                "pod labels may not set modeldeploy.io/* or the app.kubernetes.io/* labels the "
                "operator sets (its selectors and recommended labels)"
            ),
        }
    )
    annotations = _string_map(
        "Extra annotations on the pods.", key_length=317, value_length=MAX_STRING * 4, count=64
    )
    annotations["x-kubernetes-validations"].append(
        {
            "rule": "self.all(k, !k.startsWith('modeldeploy.io/') && !k.startsWith('prometheus.io/'))",
            "message": (
                "pod annotations may not set modeldeploy.io/* or prometheus.io/* (the operator's own "
                "revision and scrape annotations)"
            ),
        }
    )
    volume = model_schema(k8s.V1Volume, only=("name", *VOLUME_SOURCES))
    volume["description"] = (
        "A volume of the pod: configMap, secret, emptyDir, persistentVolumeClaim, projected, csi or "
        "downwardAPI."
    )
    volume["x-kubernetes-validations"] = [
        {
            "rule": "[" + ", ".join(f"has(self.{_camel(s, k8s.V1Volume)})" for s in VOLUME_SOURCES) + "]"
            ".filter(x, x).size() == 1",
            "message": "each volume sets exactly one source",
        }
    ]
    owned_volumes = ", ".join(f"'{v}'" for v in OWNED_VOLUMES)
    mount = model_schema(k8s.V1VolumeMount)
    mount["description"] = "Where a volume of `volumes` appears in the container."
    owned_mounts = " && ".join(
        f"self.mountPath != '{p}' && !self.mountPath.startsWith('{p}/')" for p in OWNED_MOUNT_PREFIXES
    )
    mount["x-kubernetes-validations"] = [
        {
            "rule": owned_mounts,
            "message": (
                "volumeMounts may not use /tmp, /var/cache/modeldeploy or /mnt/models"
                " (the operator's own mounts)"
            ),
        },
        {"rule": "self.mountPath.startsWith('/')", "message": "mountPath must be absolute"},
    ]
    env = model_schema(k8s.V1EnvVar)
    env["description"] = "An environment variable of the container."
    env["x-kubernetes-validations"] = [
        {
            "rule": "!self.name.startsWith('MODELDEPLOY_')",
            "message": "env may not set MODELDEPLOY_* variables: the operator sets those from the spec",
        },
        {"rule": "!(has(self.value) && has(self.valueFrom))", "message": "set value or valueFrom, not both"},
    ]
    toleration = model_schema(k8s.V1Toleration)
    toleration["description"] = "A toleration of node taints."
    toleration["x-kubernetes-validations"] = [
        {
            "rule": (
                "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''"
            ),
            "message": "a toleration with operator Exists takes no value",
        }
    ]
    spread = model_schema(k8s.V1TopologySpreadConstraint)
    spread["description"] = "How the pods spread across topology domains (zones, nodes)."
    affinity = model_schema(k8s.V1Affinity)
    affinity["description"] = "Node affinity, pod affinity and anti-affinity, as in a Pod spec."
    secret_ref = {
        "type": "object",
        "description": "A Secret of type kubernetes.io/dockerconfigjson in the namespace.",
        "required": ["name"],
        "properties": {
            "name": {
                "type": "string",
                "description": "Name of the Secret.",
                "maxLength": 253,
                "pattern": DNS_SUBDOMAIN,
            }
        },
    }
    properties: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "serviceAccountName": {
            "type": "string",
            "description": (
                "ServiceAccount the pods run as (e.g. one bound to a cloud identity)."
                + (
                    " The operator binds the router's Roles to it instead of making one."
                    if component == "router"
                    else ""
                )
            ),
            "maxLength": 253,
            "pattern": DNS_SUBDOMAIN,
        },
        "imagePullSecrets": {
            "type": "array",
            "description": "Secrets to pull the image with (a private registry).",
            "maxItems": 16,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": secret_ref,
        },
        "nodeSelector": _string_map(
            "Node labels the pods must be scheduled on.", key_length=317, value_length=63, count=32
        ),
        "tolerations": {
            "type": "array",
            "description": "Taints the pods tolerate.",
            "maxItems": MAX_ITEMS,
            "items": toleration,
        },
        "affinity": affinity,
        "topologySpreadConstraints": {
            "type": "array",
            "description": "How the pods spread across zones or nodes.",
            "maxItems": 8,
            "items": spread,
        },
        "priorityClassName": {
            "type": "string",
            "description": "PriorityClass of the pods.",
            "maxLength": 253,
            "pattern": DNS_SUBDOMAIN,
        },
        "env": {
            "type": "array",
            "description": "Extra environment variables of the container (never MODELDEPLOY_*).",
            "maxItems": 64,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": env,
        },
        "volumes": {
            "type": "array",
            "description": "Extra volumes of the pod, mounted with volumeMounts.",
            "maxItems": 16,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(v, !(v.name in [{owned_volumes}]))",
                    "message": (
                        "volumes may not be named model-cache, model-store or tmp"
                        " (the operator's own volumes)"
                    ),
                }
            ],
            "items": volume,
        },
        "volumeMounts": {
            "type": "array",
            "description": "Mounts of extra volumes in the container.",
            "maxItems": 16,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["mountPath"],
            "items": mount,
        },
    }
    description = {
        "serving": (
            "Settings of the model server pods of every variant and revision. Container resources "
            "come from spec.resources (or a variant's resources)."
        ),
        "router": "Settings of the built-in router's pods.",
    }[component]
    properties["resources"] = _resources()
    out: dict[str, Any] = {"type": "object", "description": description}
    if component == "serving":
        # One place for the model server's resources: spec.resources (or a variant's). The field is in
        # the schema (the chart's serving defaults share this shape) and refused here with a message.
        out["x-kubernetes-validations"] = [
            {
                "rule": "!has(self.resources)",
                "message": "set the model server's resources with spec.resources (or a variant's resources)",
            }
        ]
    out["properties"] = properties
    return out


def pods_schema() -> dict[str, Any]:
    """spec.pods."""
    return {
        "type": "object",
        "description": (
            "How the operator's pods fit the cluster: service account, pull secrets, placement, "
            "labels, annotations, extra env and volumes. Unset fields take the chart's defaults "
            "(operator settings); the operator keeps command, ports, probes, security context and its "
            "own labels, annotations, env names and volumes. See docs/crd.md."
        ),
        "properties": {"serving": pod_settings_schema("serving"), "router": pod_settings_schema("router")},
    }


VALUES_SCHEMA_PATH = REPO / "charts" / "modeldeploy" / "values.schema.json"
_OWNED_LABEL_PATTERN = (
    "^(modeldeploy\\.io/|app\\.kubernetes\\.io/(name|instance|component|part-of|managed-by|version)$)"
)
_OWNED_ANNOTATION_PATTERN = "^(modeldeploy\\.io/|prometheus\\.io/)"


def _json_schema(node: Any) -> Any:
    """A CRD schema node as the chart's JSON Schema: no x-kubernetes-* keys, unknown fields refused."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _json_schema(value) for key, value in node.items() if not key.startswith("x-kubernetes")}
    if "properties" in node:
        out["additionalProperties"] = False
    return out


def values_defaults_schema() -> dict[str, Any]:
    """values.schema.json's `defaults`: the CRD's pod settings, with the CEL rules that guard the
    operator's names written as JSON Schema (helm refuses such values before the operator starts)."""

    def pod(component: str) -> dict[str, Any]:
        schema = _json_schema(pod_settings_schema(component))
        props = schema["properties"]
        props["labels"]["propertyNames"] = {"not": {"pattern": _OWNED_LABEL_PATTERN}}
        props["annotations"]["propertyNames"] = {"not": {"pattern": _OWNED_ANNOTATION_PATTERN}}
        props["env"]["items"]["properties"]["name"]["not"] = {"pattern": "^MODELDEPLOY_"}
        props["volumes"]["items"]["properties"]["name"]["not"] = {"enum": list(OWNED_VOLUMES)}
        props["volumeMounts"]["items"]["properties"]["mountPath"]["not"] = {
            "pattern": "^(/tmp|/var/cache/modeldeploy|/mnt/models)(/|$)"
        }
        schema["description"] = f"Defaults of the {component} pods (the shape of spec.pods.{component})."
        return schema

    budget = {
        "type": "object",
        "additionalProperties": False,
        "description": "spec.podDisruptionBudget of ModelDeployments that set none.",
        "properties": {
            "enabled": {"type": "boolean", "description": "Make the PodDisruptionBudgets."},
            "maxUnavailable": {
                "description": "Pods of a revision that may be down at once.",
                "type": ["integer", "string"],
                "pattern": "^[0-9]+%?$",
            },
            "minAvailable": {
                "description": "Pods of a revision that must stay up.",
                "type": ["integer", "string"],
                "pattern": "^[0-9]+%?$",
            },
        },
        "not": {"required": ["maxUnavailable", "minAvailable"]},
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "Pod settings applied where a ModelDeployment is silent (docs/crd.md, Pod settings).",
        "properties": {
            "serving": {
                "type": "object",
                "additionalProperties": False,
                "description": "Model server pods.",
                "properties": {"pod": pod("serving"), "podDisruptionBudget": budget},
            },
            "router": {
                "type": "object",
                "additionalProperties": False,
                "description": "Router pods.",
                "properties": {"pod": pod("router")},
            },
        },
    }


def render_values_schema(text: str) -> str:
    schema = json.loads(text)
    schema["properties"]["defaults"] = values_defaults_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


class _NoAliases(yaml.SafeDumper):
    """Shared sub-schemas written out in full: no YAML anchors in a CRD people read and diff."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


MARKER_BEFORE = "\n".join(
    (
        "                replicas:",
        "                  type: integer",
        "                  description: Replicas per variant",
    )
)
INDENT = " " * 16


def render(crd_text: str) -> str:
    """The CRD text with spec.pods (re)generated, everything else byte for byte as it was."""
    block = yaml.dump(
        {"pods": pods_schema()}, Dumper=_NoAliases, sort_keys=False, width=100, allow_unicode=True
    )
    block = "".join(INDENT + line if line.strip() else line for line in block.splitlines(keepends=True))
    start = crd_text.find(INDENT + "pods:\n")
    if start != -1:
        end = crd_text.index(MARKER_BEFORE, start)
        crd_text = crd_text[:start] + crd_text[end:]
    at = crd_text.index(MARKER_BEFORE)
    return crd_text[:at] + block + crd_text[at:]


def main(argv: list[str]) -> int:
    stale = []
    for path in CRD_PATHS:
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(path)
            if "--check" not in argv:
                path.write_text(new)
    text = VALUES_SCHEMA_PATH.read_text()
    new = render_values_schema(text)
    if new != text:
        stale.append(VALUES_SCHEMA_PATH)
        if "--check" not in argv:
            VALUES_SCHEMA_PATH.write_text(new)
    if stale and "--check" in argv:
        print("out of date:", *stale, "(run .venv/bin/python hack/crd_pod_schema.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
