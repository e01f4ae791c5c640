"""The process node agent: registers the Node, keeps it alive, and runs the pods bound to it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from modeldeploy_testcluster.controlplane import KUBE_VERSION
from modeldeploy_testcluster.images import ImageEntry
from modeldeploy_testcluster.layout import Layout
from modeldeploy_testcluster.processnode.pod import PodRunner

log = logging.getLogger("process-node")

NODE_LABEL = "modeldeploy.io/node-kind"
HEARTBEAT_SECONDS = 10


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodIPs:
    """Hands out pod IPs from the process node's range; thread-safe."""

    def __init__(self, cidr: str) -> None:
        self._free = [str(ip) for ip in ipaddress.ip_network(cidr).hosts()]
        self._lock = threading.Lock()

    def take(self) -> str:
        with self._lock:
            if not self._free:
                raise RuntimeError("the process node ran out of pod IPs")
            return self._free.pop(0)

    def give_back(self, ip: str) -> None:
        with self._lock:
            self._free.append(ip)


class ProcessNodeAgent:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.api = config.new_client_from_config(config_file=str(layout.admin_kubeconfig))
        self.api.configuration.connection_pool_maxsize = 64
        self.core = client.CoreV1Api(self.api)
        self.leases = client.CoordinationV1Api(self.api)
        self.images: dict[str, ImageEntry] = json.loads(layout.images_file.read_text())
        self.ips = PodIPs(layout.process_pod_cidr)
        self.runners: dict[str, PodRunner] = {}
        self._stopping = threading.Event()
        self._watch: watch.Watch | None = None

    # -- node ---------------------------------------------------------------------------------
    def register(self) -> None:
        name = self.layout.process_node_name
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    NODE_LABEL: "process",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            # Tainted only when the real node is the default one (layout.real_node_default).
            "spec": {"taints": self.layout.process_node_taints},
        }
        try:
            self.core.create_node(body)
        except client.ApiException as error:
            if error.status != 409:
                raise
        self._heartbeat()

    def _node_status(self) -> dict[str, Any]:
        now = utcnow()

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._started,
            }

        capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        return {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {"type": "InternalIP", "address": self.layout.node_ip},
                    {"type": "Hostname", "address": self.layout.process_node_name},
                ],
                "conditions": [
                    condition("Ready", "True", "KubeletReady", "process node agent is running"),
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "osImage": "modeldeploy process node",
                    "kernelVersion": "local",
                    "kubeletVersion": KUBE_VERSION,
                    "kubeProxyVersion": "",
                    "containerRuntimeVersion": "process://1",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }

    def _heartbeat(self) -> None:
        name = self.layout.process_node_name
        self.core.patch_node_status(name, self._node_status())
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": 40,
                "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            self.leases.patch_namespaced_lease(name, "kube-node-lease", {"spec": lease["spec"]})
        except client.ApiException as error:
            if error.status != 404:
                raise
            self.leases.create_namespaced_lease("kube-node-lease", lease)

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            try:
                self._heartbeat()
            except Exception:  # a missed beat is retried at the next period
                log.exception("node heartbeat failed")

    # -- pods ---------------------------------------------------------------------------------
    def _on_pod(self, event_type: str, pod: Any) -> None:
        uid = pod.metadata.uid
        runner = self.runners.get(uid)
        if event_type == "DELETED":
            if runner:
                runner.request_stop(force=True)
            return
        if runner is None:
            if pod.status and pod.status.phase in ("Succeeded", "Failed"):
                return
            runner = PodRunner(self, pod, Path(self.layout.pods_dir) / uid)
            self.runners[uid] = runner
            runner.start()
        else:
            runner.update(pod)
        if pod.metadata.deletion_timestamp is not None:
            runner.request_stop(force=False)

    def _watch_pods(self) -> None:
        selector = f"spec.nodeName={self.layout.process_node_name}"
        while not self._stopping.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for pod in listing.items:
                    self._on_pod("ADDED", pod)
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                ):
                    self._on_pod(event["type"], event["object"])
                    if self._stopping.is_set():
                        break
            except client.ApiException as error:
                if error.status != 410:
                    log.warning("pod watch failed: %s", error.reason)
                    self._stopping.wait(1)
            except Exception:
                if not self._stopping.is_set():
                    log.exception("pod watch failed")
                    self._stopping.wait(1)

    def run(self) -> None:
        self._started = utcnow()
        self.layout.pods_dir.mkdir(parents=True, exist_ok=True)
        self.register()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        watcher = threading.Thread(target=self._watch_pods, name="pod-watch", daemon=True)
        watcher.start()
        self._stopping.wait()
        for runner in list(self.runners.values()):
            runner.request_stop(force=True)
        for runner in list(self.runners.values()):
            runner.join(timeout=30)
        log.info("process node agent stopped")

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()
