"""One pod on the process node: its processes, probes, restarts, status and termination."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client

from modeldeploy_testcluster import daemons, network
from modeldeploy_testcluster.images import repository_of
from modeldeploy_testcluster.processnode import probes
from modeldeploy_testcluster.processnode.envvars import container_env, expand
from modeldeploy_testcluster.processnode.volumes import PodVolumes, UnsupportedVolumeError

if TYPE_CHECKING:
    from modeldeploy_testcluster.processnode.agent import ProcessNodeAgent

log = logging.getLogger("process-node")

_TICK = 0.2
_MAX_BACKOFF = 20.0
_FORCED_GRACE = 5.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodCannotRunError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ContainerProcess:
    """One container: the current process (if any), its restart history and probe states."""

    def __init__(self, spec: Any, bin_dir: str, entrypoint: list[str]) -> None:
        self.spec = spec
        self.bin_dir = bin_dir
        self.entrypoint = entrypoint
        self.popen: subprocess.Popen[bytes] | None = None
        self.record: daemons.ProcessRecord | None = None
        self.restart_count = 0
        self.started_at = ""
        self.started_monotonic = 0.0
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.restart_at: float | None = None
        self.backoff = 1.0
        self.ready = False
        self.started = False
        self.readiness: probes.ProbeState | None = None
        self.liveness: probes.ProbeState | None = None
        self.startup: probes.ProbeState | None = None

    @property
    def name(self) -> str:
        return str(self.spec.name)


class PodRunner(threading.Thread):
    def __init__(self, agent: ProcessNodeAgent, pod: Any, folder: Path) -> None:
        super().__init__(name=f"pod-{pod.metadata.namespace}/{pod.metadata.name}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.folder = folder
        self.core: client.CoreV1Api = agent.core
        self.layout = agent.layout
        self.ip: str | None = None
        self.netns = ""
        self.containers: list[ContainerProcess] = []
        self.volumes = PodVolumes(self.core, pod, folder / "volumes")
        self._stop_requested = threading.Event()
        self._forced = False
        self._last_status: dict[str, Any] | None = None
        self._start_time = _now()
        self._conditions: dict[str, dict[str, str]] = {}
        self._terminal = False

    # -- called from the watch thread ---------------------------------------------------------
    def update(self, pod: Any) -> None:
        self.pod = pod

    def request_stop(self, force: bool) -> None:
        self._forced = self._forced or force
        self._stop_requested.set()

    # -- the pod's life -----------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._prepare()
            for container in self.containers:
                self._launch(container)
            while not self._stop_requested.is_set():
                self._tick()
                self._stop_requested.wait(_TICK)
        except PodCannotRunError as error:
            log.warning("%s cannot run: %s", self.pod_key, error.message)
            self._fail(error.reason, error.message)
        except Exception:
            log.exception("%s: unexpected failure", self.pod_key)
            self._fail("ProcessNodeError", "the process node agent failed to run this pod; see its log")
        self._stop_requested.wait()
        self._terminate()

    def _prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        spec = self.pod.spec
        if spec.init_containers:
            raise PodCannotRunError(
                "InitContainersUnsupported", "the process node does not run init containers"
            )
        for container in spec.containers:
            entry = self.agent.images.get(repository_of(container.image))
            if entry is None:
                known = ", ".join(sorted(self.agent.images))
                raise PodCannotRunError(
                    "UnknownImage",
                    f"image {container.image!r} of container {container.name!r} is not one the process node "
                    f"can run (known: {known})",
                )
            self.containers.append(ContainerProcess(container, entry["bin_dir"], entry["entrypoint"]))
        self.ip = self.agent.ips.take()
        self.netns = network.create_pod_network(self.layout, self.ip)
        while True:
            try:
                self.volumes.materialize()
                break
            except UnsupportedVolumeError as error:
                raise PodCannotRunError("UnsupportedVolumeError", str(error)) from error
            except client.ApiException as error:
                for c in self.containers:
                    c.state = {
                        "waiting": {"reason": "CreateContainerConfigError", "message": str(error.reason)}
                    }
                self._patch_status()
                if self._stop_requested.wait(2):
                    return
        self._patch_status()

    @property
    def pod_key(self) -> str:
        return f"{self.pod.metadata.namespace}/{self.pod.metadata.name}"

    def _argv(self, container: ContainerProcess, env: dict[str, str]) -> list[str]:
        spec = container.spec
        argv = list(spec.command or container.entrypoint) + list(spec.args or [])
        argv = [expand(word, env) for word in argv]
        if not argv:
            raise PodCannotRunError("NoCommand", f"container {container.name!r} has no command")
        if "/" not in argv[0]:
            local = Path(container.bin_dir) / argv[0]
            found = str(local) if local.exists() else shutil.which(argv[0], path=env.get("PATH"))
            if found is None:
                raise PodCannotRunError(
                    "CommandNotFound", f"{argv[0]!r} is not in {container.bin_dir} or on PATH"
                )
            argv[0] = found
        return argv

    def _base_env(self, container: ContainerProcess) -> dict[str, str]:
        port = str(self.layout.apiserver_port)
        return {
            "PATH": f"{container.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "HOSTNAME": self.pod.metadata.name,
            # What kube-proxy would make of the `kubernetes` Service: the API server itself.
            "KUBERNETES_SERVICE_HOST": self.layout.host_ip,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{self.layout.host_ip}:{port}",
        }

    def _launch(self, container: ContainerProcess) -> None:
        self.pod.status.pod_ip = self.ip  # for downward-API references to status.podIP
        self.pod.status.host_ip = self.layout.node_ip
        env = container_env(self.core, self.pod, container.spec, self._base_env(container))
        mounts = []
        for mount in container.spec.volume_mounts or []:
            source = self.volumes.paths.get(mount.name)
            if source is None:
                raise PodCannotRunError("UnknownVolume", f"volumeMount {mount.name!r} names no volume")
            mounts.append(
                {
                    "source": str(source / mount.sub_path if mount.sub_path else source),
                    "target": mount.mount_path,
                    "read_only": bool(mount.read_only),
                }
            )
        spec_file = self.folder / f"{container.name}.exec.json"
        spec_file.write_text(
            json.dumps(
                {
                    "argv": self._argv(container, env),
                    "env": env,
                    "mounts": mounts,
                    "working_dir": container.spec.working_dir or "",
                    # The checkout that holds the virtualenv: kept visible over any volume mount.
                    "keep_visible": [str(Path(container.bin_dir).resolve().parent.parent)],
                }
            )
        )
        log_file = (self.folder / f"{container.name}.log").open("ab")
        argv = [
            "ip",
            "netns",
            "exec",
            self.netns,
            sys.executable,
            "-m",
            "modeldeploy_testcluster.processnode.podexec",
            str(spec_file),
        ]
        container.popen = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log_file.close()
        start_time = daemons.start_time_of(container.popen.pid) or 0
        container.record = daemons.ProcessRecord(container.name, container.popen.pid, start_time)
        self._save_records()
        container.started_at = _now()
        container.started_monotonic = time.monotonic()
        container.state = {"running": {"startedAt": container.started_at}}
        container.restart_at = None
        spec = container.spec
        started = container.started_monotonic
        container.startup = (
            probes.ProbeState(spec.startup_probe, started, False) if spec.startup_probe else None
        )
        container.started = container.startup is None
        container.readiness = (
            probes.ProbeState(spec.readiness_probe, started, False) if spec.readiness_probe else None
        )
        container.liveness = (
            probes.ProbeState(spec.liveness_probe, started, True) if spec.liveness_probe else None
        )
        container.ready = container.readiness is None
        log.info("%s: started %s (pid %d)", self.pod_key, container.name, container.popen.pid)

    def _save_records(self) -> None:
        daemons.save(self.folder / "processes.json", [c.record for c in self.containers if c.record])

    def _tick(self) -> None:
        now = time.monotonic()
        for container in self.containers:
            if container.popen is not None and container.popen.poll() is not None:
                self._exited(container, container.popen.returncode, now)
            if container.restart_at is not None and now >= container.restart_at:
                container.restart_count += 1
                self._launch(container)
            if container.popen is not None:
                self._probe(container, now)
        self.volumes.renew_tokens_if_due()
        self._patch_status()

    def _exited(self, container: ContainerProcess, code: int, now: float) -> None:
        container.popen = None
        finished = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": _now(),
        }
        container.last_state = {"terminated": finished}
        container.ready = False
        container.started = False
        policy = self.pod.spec.restart_policy or "Always"
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            if now - container.started_monotonic > 60:
                container.backoff = 1.0
            container.restart_at = now + container.backoff
            container.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {container.backoff:.0f}s restarting failed container",
                }
            }
            self._event("BackOff", f"container {container.name} exited with {code}; restarting", "Warning")
            container.backoff = min(container.backoff * 2, _MAX_BACKOFF)
        else:
            container.state = {"terminated": finished}
            container.last_state = {}
        log.info("%s: %s exited with %d", self.pod_key, container.name, code)

    def _probe(self, container: ContainerProcess, now: float) -> None:
        assert self.ip is not None
        ns = self.netns
        if container.startup is not None and not container.started:
            if container.startup.due(now):
                container.started = container.startup.record(
                    probes.run_once(container.startup.probe, container.spec, self.ip, ns), now
                )
            return
        container.started = True
        if container.liveness is not None and container.liveness.due(now):
            alive = container.liveness.record(
                probes.run_once(container.liveness.probe, container.spec, self.ip, ns), now
            )
            if not alive:
                self._event("Unhealthy", f"liveness probe of {container.name} failed; killing it", "Warning")
                self._kill(container, grace=1.0)
                return
        if container.readiness is not None and container.readiness.due(now):
            container.ready = container.readiness.record(
                probes.run_once(container.readiness.probe, container.spec, self.ip, ns), now
            )

    def _kill(self, container: ContainerProcess, grace: float) -> None:
        if container.record is not None:
            daemons.stop(container.record, grace=grace)
        if container.popen is not None:
            container.popen.wait()

    # -- status -------------------------------------------------------------------------------
    def _condition(self, kind: str, ok: bool) -> dict[str, str]:
        status = "True" if ok else "False"
        previous = self._conditions.get(kind)
        if previous is None or previous["status"] != status:
            previous = {"type": kind, "status": status, "lastTransitionTime": _now()}
            self._conditions[kind] = previous
        return previous

    def _phase(self) -> str:
        if self._terminal:
            return "Failed"
        states = [c.state for c in self.containers]
        if states and all("terminated" in s for s in states):
            return "Succeeded" if all(s["terminated"]["exitCode"] == 0 for s in states) else "Failed"
        if any(c.popen is not None or c.restart_at is not None for c in self.containers):
            return "Running"
        return "Pending"

    def _patch_status(self) -> None:
        ready = bool(self.containers) and all(c.ready for c in self.containers)
        statuses = [
            {
                "name": c.name,
                "image": c.spec.image,
                "imageID": f"process://{c.spec.image}",
                "containerID": f"process://{c.record.pid}" if c.record else "",
                "ready": c.ready,
                "started": c.started,
                "restartCount": c.restart_count,
                "state": c.state,
                "lastState": c.last_state,
            }
            for c in self.containers
        ]
        status: dict[str, Any] = {
            "phase": self._phase(),
            "hostIP": self.layout.node_ip,
            "hostIPs": [{"ip": self.layout.node_ip}],
            "startTime": self._start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", self.ip is not None),
                self._condition("Initialized", True),
                self._condition("ContainersReady", ready),
                self._condition("Ready", ready),
            ],
            "containerStatuses": statuses,
        }
        if self.ip:
            status.update(podIP=self.ip, podIPs=[{"ip": self.ip}])
        if status == self._last_status:
            return
        try:
            self.core.patch_namespaced_pod_status(
                self.pod.metadata.name, self.pod.metadata.namespace, {"status": status}
            )
            self._last_status = status
        except client.ApiException as error:
            if error.status != 404:
                log.warning("%s: status update failed: %s", self.pod_key, error.reason)

    def _fail(self, reason: str, message: str) -> None:
        self._terminal = True
        for c in self.containers:
            c.state = {"waiting": {"reason": reason, "message": message}}
        status = {
            "phase": "Failed",
            "reason": reason,
            "message": message,
            "hostIP": self.layout.node_ip,
            "startTime": self._start_time,
        }
        try:
            self.core.patch_namespaced_pod_status(
                self.pod.metadata.name, self.pod.metadata.namespace, {"status": status}
            )
        except client.ApiException as error:
            log.warning("%s: could not mark the pod Failed: %s", self.pod_key, error.reason)
        self._event(reason, message, "Warning")

    def _event(self, reason: str, message: str, kind: str = "Normal") -> None:
        meta = self.pod.metadata
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "process-node", "host": self.layout.process_node_name},
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta.namespace, body)
        except client.ApiException:
            log.debug("event %s on %s not recorded", reason, self.pod_key)

    # -- termination --------------------------------------------------------------------------
    def _terminate(self) -> None:
        spec, meta = self.pod.spec, self.pod.metadata
        grace = float(
            meta.deletion_grace_period_seconds
            if meta.deletion_grace_period_seconds is not None
            else spec.termination_grace_period_seconds or 30
        )
        if self._forced:
            grace = min(grace, _FORCED_GRACE)
        for container in self.containers:
            container.restart_at = None
            self._kill(container, grace)
        if self.ip:
            network.delete_pod_network(self.ip)
            self.agent.ips.give_back(self.ip)
            self.ip = None
        if meta.deletion_timestamp is not None:
            try:
                self.core.delete_namespaced_pod(
                    meta.name,
                    meta.namespace,
                    body=client.V1DeleteOptions(grace_period_seconds=0, preconditions={"uid": meta.uid}),
                )
            except client.ApiException as error:
                if error.status not in (404, 409):
                    log.warning("%s: final delete failed: %s", self.pod_key, error.reason)
        shutil.rmtree(self.folder / "volumes", ignore_errors=True)
        (self.folder / "processes.json").unlink(missing_ok=True)
        self.agent.runners.pop(meta.uid, None)
        log.info("%s: stopped", self.pod_key)
