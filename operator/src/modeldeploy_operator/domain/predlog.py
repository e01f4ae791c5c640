"""spec.predictionLog on the model servers, the output-role stream pods and the router: their
PredictionLogSettings and the HMAC key's mount.

Pure. The settings are not part of the revision (contract/predlog_settings.py): turning the log on
changes the pods of the running revision, it does not start a rollout.
"""

from __future__ import annotations

from typing import Any

from modeldeploy_contract.predlog_settings import PredictionLogSettings

from .spec import PredictionLog

HMAC_MOUNT = "/var/run/secrets/modeldeploy/predlog"
HMAC_VOLUME = "prediction-log-key"
HMAC_FILE = "hmac-key"


def prediction_log_settings_for(
    plog: PredictionLog, deployment: str, variant: str, revision: str
) -> PredictionLogSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "sample_rate": plog.sample_rate,
        "sink": plog.sink,
        "kafka_bootstrap_servers": plog.kafka.bootstrap_servers if plog.kafka else "",
        "kafka_topic": plog.kafka.topic if plog.kafka else "",
        "drop": ",".join(plog.pii.drop),
        "pseudonymise": ",".join(plog.pii.pseudonymise),
        "keep": ",".join(plog.pii.keep),
        "default_action": plog.pii.default,
        "hmac_key_file": f"{HMAC_MOUNT}/{HMAC_FILE}",
        "capacity": plog.buffer_records,
        "deployment": deployment,
        "variant": variant,
        "revision": revision,
    }
    # Every field explicitly: BaseSettings would fill the rest from the operator's own environment.
    return PredictionLogSettings(**values)


def hmac_volume(plog: PredictionLog) -> dict[str, Any]:
    secret = plog.hmac_key_secret
    return {
        "name": HMAC_VOLUME,
        "secret": {
            "secretName": secret.name,
            "items": [{"key": secret.key, "path": HMAC_FILE}],
            "defaultMode": 0o440,
        },
    }


def hmac_mount() -> dict[str, Any]:
    return {"name": HMAC_VOLUME, "mountPath": HMAC_MOUNT, "readOnly": True}


def add_prediction_log(
    pod_spec: dict[str, Any], plog: PredictionLog, deployment: str, variant: str, revision: str
) -> None:
    """The MODELDEPLOY_PREDLOG_* variables and the HMAC key's Secret (a file) on a pod spec's first
    container: the model servers, the stream pods writing the output topic, the router (whose
    records carry the arm it chose per request, so its variant and revision are left empty here)."""
    container = pod_spec["containers"][0]
    settings = prediction_log_settings_for(plog, deployment, variant, revision)
    container["env"] = container["env"] + [
        {"name": k, "value": v} for k, v in sorted(settings.to_env().items())
    ]
    container["volumeMounts"] = [*container.get("volumeMounts", []), hmac_mount()]
    pod_spec["volumes"] = [*pod_spec.get("volumes", []), hmac_volume(plog)]
    # The key is mounted 0440: owner root, group the pod's fsGroup, and the pods run as a non-root
    # user. The router's pods had no fsGroup (they mounted nothing before), could not open the key
    # and crashed at start (PermissionError: CrashLoopBackOff on the local cluster's real node).
    # Set here, not on every router: a router without the log keeps its pod template (an operator
    # upgrade restarts no router).
    security = pod_spec["securityContext"]
    security.setdefault("fsGroup", security["runAsGroup"])
