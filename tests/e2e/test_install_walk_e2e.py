"""The path a new user walks, as docs/install.md tells it, on the local cluster and its real node
(issue 13, "Done when"): images to a registry that asks for a login, `helm install` with a pull secret
and node placement for the model server and router pods, the churn example Ready, a first prediction
through `kubectl port-forward`, a first canary watched with `kubectl modeldeploy get --watch`, and the
chart's Grafana dashboard answering from a real Prometheus.

Where the test differs from the page, and why:
- the registry: a second instance of the local registry's binary with htpasswd authentication, on the
  bridge (modeldeploy_testcluster.registry.authenticated_registry), serving the local registry's storage;
- the release: the chart installed into the test's namespace with an instance id of its own
  (operator_fixtures.private_operator_installed), because the session's operator serves the rest of
  the cluster meanwhile; the ModelDeployment carries the instance label, the one change to the example
  besides the store addresses (and `spec.resources`, dropped so the chart's defaults apply: the real
  node has 2 CPUs and other cluster streams run beside this one);
- traffic during the canary: the tests' generator (traffic.Traffic), standing in for the user's callers.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from modeldeploy_testcluster.layout import REAL_NODE_TOLERATION, Layout
from modeldeploy_testcluster.realnode import NODE_KIND_LABEL
from modeldeploy_testcluster.registry import answers_unauthorized, authenticated_registry

from cluster_helpers import REPO, SERVING, get_mdep, kubectl, port_forward, ready_now, wait_for
from example_manifests import STORE_SECRET, documents, substitute
from example_stores import STORE_KEYS, copy_churn_bundles, example_stores
from local_processes import free_port
from operator_fixtures import private_operator_installed
from prometheus_scrape import PROMETHEUS, running_prometheus, wait_for_dashboard_data
from rollout_helpers import dump, rows
from traffic import Traffic

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    # The session's release: this checkout's CRD, and its images built and in the local registry.
    pytest.mark.usefixtures("operator_release"),
    # Pods start from images pulled on the 2-core real node beside the other streams; the canary's
    # steps and the dashboard's drift windows take about two minutes of traffic.
    pytest.mark.timeout(1500),
    # Opt-in: 281-503 s alone, 334 s in the CI run of 2026-12-04, where it failed only because the
    # watch took more than 30 s to end after its Ctrl-C (the walk itself had passed; not explained).
    # Its canary alone takes 4-6 minutes on the loaded 2-core machine. Run it with
    # MODELDEPLOY_WALK_TEST=1 (docs/install.md).
    pytest.mark.skipif(
        os.environ.get("MODELDEPLOY_WALK_TEST") != "1",
        reason="opt-in (MODELDEPLOY_WALK_TEST=1): the install walk takes 5-8 minutes of the shared cluster",
    ),
]

PLUGIN = str(Path(sys.executable).parent / "kubectl-modeldeploy")
SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
USER, PASSWORD = "walker", "not-a-real-password"
PULL_SECRET = "regcred"
EXAMPLE = Path("examples/churn/modeldeployment.yaml")
NAME = "churn"
READY_SECONDS = 420
"""First pods of a fresh release on the loaded real node: the operator's, then the model servers'."""

PLACEMENT = {
    "imagePullSecrets": [{"name": PULL_SECRET}],
    "nodeSelector": {NODE_KIND_LABEL: "real"},
    "tolerations": [REAL_NODE_TOLERATION],
}
"""docs/install.md's pod defaults: the pull secret, a label the node pool has, the pool's taint."""

CANARY_PATCH: dict[str, Any] = {
    "spec": {
        "model": {"uri": "s3://models/churn/v2", "version": "2"},
        "rollout": {
            "strategy": "Canary",
            "steps": [
                {"shadow": {"percent": 100, "duration": "20s"}},
                {"setWeight": 50},
                {"analysis": {"duration": "20s"}},
                {"pause": {}},
            ],
            "analysis": {
                "interval": "10s",
                "minSamples": 20,
                "checks": [
                    {"name": "errors", "type": "errorRate", "threshold": {"max": 0.05}},
                    {
                        "name": "score-shift",
                        "type": "predictionShift",
                        "threshold": {"max": 1.0},
                        "minSamples": 50,
                    },
                ],
            },
        },
    }
}
"""docs/install.md, "Your first canary": the patch, as written there."""

FIRST_ROW = [12, 1, 0, 3, 64.5, 780.2, 2, 1, 0, 1, 0, 4, 1, 0]
"""The README's first prediction."""


def _run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, env=env, timeout=900, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _manifest_status(address: str, authorization: str | None) -> int:
    """HTTP status of the serving image's manifest at the registry, with or without a login."""
    request = urllib.request.Request(
        f"http://{address}/v2/modeldeploy/serving/manifests/{_app_version()}",
        method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _app_version() -> str:
    chart = yaml.safe_load((REPO / "charts" / "modeldeploy" / "Chart.yaml").read_text())
    return str(chart["appVersion"])


def _pods(api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def _pulled_images(api: client.ApiClient, namespace: str) -> dict[str, set[str]]:
    """Pod name -> the images the kubelet said it pulled for it (`Pulled` Events)."""
    pulled: dict[str, set[str]] = {}
    for event in client.CoreV1Api(api).list_namespaced_event(namespace).items:
        found = re.match(r'Successfully pulled image "([^"]+)"', event.message or "")
        if event.reason == "Pulled" and found:
            pulled.setdefault(event.involved_object.name, set()).add(found.group(1))
    return pulled


class Watch:
    """`kubectl modeldeploy get NAME --watch` on a pipe (no terminal: frames separated by a blank line,
    no colour); its output read as it comes, until it is interrupted as Ctrl-C would."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        # stderr to a file, not a pipe nobody reads until the end (64 KiB of warnings would block it).
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by stop()
        # Ctrl-C as a terminal sends it, to a watch that takes it: a test session started in the
        # background (nohup, CI) inherits SIGINT ignored, and a Python started so leaves it ignored (no
        # KeyboardInterrupt: the watch never ended, killed after 90 s, 2026-12-04). The wrapper puts
        # the default back before exec'ing the plugin.
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SIGINT_DEFAULT,
                PLUGIN,
                "--kubeconfig",
                str(kubeconfig),
                "-n",
                namespace,
                "get",
                NAME,
                "--watch",
            ],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")},
        )
        self._text: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._text.append(line)

    def frames(self) -> list[str]:
        """The frames so far (each starts with its `Name:` line)."""
        text = "".join(self._text)
        return ["Name:" + part for part in text.split("Name:")[1:]]

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=10)
        self._stderr.seek(0)
        errors = self._stderr.read()
        self._stderr.close()
        return code, f"{len(errors)} characters on stderr, the last: {errors[-2000:]}"


def _step_shown(frame: str) -> int | None:
    found = re.search(r"^  Step:\s+(\d+)/4$", frame, re.MULTILINE)
    return int(found.group(1)) if found else None


def test_the_documented_install_walk(
    local_cluster: Layout,
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    churn_bundles: Path,
    tmp_path: Path,
) -> None:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (hack/install-system-deps.sh installs it)")
    started = time.monotonic()
    folder = tmp_path / "registry"
    folder.mkdir()
    with authenticated_registry(local_cluster, folder, USER, PASSWORD) as registry:
        # 1. The images, pushed with a login (docs/install.md: `buildah login`, then `make images`;
        # hack/images.sh pushes with the credentials buildah keeps in REGISTRY_AUTH_FILE).
        auth_file = tmp_path / "auth.json"
        login = {**os.environ, "REGISTRY_AUTH_FILE": str(auth_file)}
        _run(
            "buildah", "login", "--tls-verify=false", "-u", USER, "--password-stdin", registry.address,
            env=login, stdin=PASSWORD,
        )  # fmt: skip
        _run(str(REPO / "hack" / "images.sh"), env={**login, "REGISTRY": registry.address, "EXPORT": "0"})
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert answers_unauthorized(registry.address)
        assert _manifest_status(registry.address, None) == 401, "the registry must ask for a login"
        assert _manifest_status(registry.address, basic) == 200, "the pushed image must be there"
        print(f"images pushed to {registry.address} at {time.monotonic() - started:.0f} s")

        # 2. The pull secret, and the chart with the registry, the secret and the pod defaults.
        kubectl(
            kubeconfig, "-n", namespace, "create", "secret", "docker-registry", PULL_SECRET,
            f"--docker-server={registry.address}", f"--docker-username={USER}",
            f"--docker-password={PASSWORD}",
        )  # fmt: skip
        values = {
            "image": {"registry": registry.address, "pullPolicy": "Always"},
            "imagePullSecrets": [{"name": PULL_SECRET}],
            "defaults": {"serving": {"pod": PLACEMENT}, "router": {"pod": PLACEMENT}},
        }
        with private_operator_installed(local_cluster, kubeconfig, namespace, values=values) as operator:
            print(f"chart installed at {time.monotonic() - started:.0f} s")
            for pod in operator.pods(kube_api):
                assert pod.spec.containers[0].image.startswith(f"{registry.address}/modeldeploy/operator:")
                assert [s.name for s in pod.spec.image_pull_secrets or []] == [PULL_SECRET]

            # 3. The churn example, from the store its README sets up.
            root = tmp_path / "store"
            copy_churn_bundles(churn_bundles, root)
            with example_stores(local_cluster.host_ip, root) as stores:
                kubectl(
                    kubeconfig, "-n", namespace, "create", "secret", "generic", STORE_SECRET,
                    *(f"--from-literal={key}={value}" for key, value in STORE_KEYS.items()),
                )  # fmt: skip
                text = substitute((REPO / EXAMPLE).read_text(), stores.s3_endpoint, stores.http_store)
                [body] = documents(EXAMPLE, text)
                body["spec"].pop("resources")
                kubectl(
                    kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=json.dumps(operator.mark(body))
                )
                try:
                    kubectl(
                        kubeconfig, "-n", namespace, "wait", "--for=condition=Ready",
                        f"modeldeployment/{NAME}", f"--timeout={READY_SECONDS}s",
                        timeout=READY_SECONDS + 30,
                    )  # fmt: skip
                    wait_for(
                        "churn Ready for its generation",
                        lambda: ready_now(kube_api, namespace, NAME),
                        timeout=60,
                    )
                except AssertionError:
                    dump(kube_api, namespace)
                    raise
                print(f"churn Ready at {time.monotonic() - started:.0f} s")
                _check_pods(kube_api, namespace, local_cluster, registry.address)

                # 4. The first prediction, through `kubectl port-forward` to the router's Service.
                with port_forward(kubeconfig, namespace, f"svc/{NAME}", 8080) as port:
                    body_v2 = {
                        "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 14], "data": FIRST_ROW}]
                    }
                    answer = httpx.post(
                        f"http://127.0.0.1:{port}/v2/models/{NAME}/infer", json=body_v2, timeout=30
                    )
                assert answer.status_code == 200, answer.text
                outputs = answer.json()["outputs"]
                assert outputs[0]["shape"][0] == 1, outputs
                # The router answered (its headers) with revision 1's model server.
                stable = _status(kube_api, namespace)["stableRevision"]
                assert answer.headers.get("x-modeldeploy-revision") == stable, answer.headers
                # The version as the spec names it ("1"; the bundle was packed as "v1"), in the
                # server's answer and the router's header alike.
                assert answer.json()["model_version"] == "1", answer.json()
                assert answer.headers.get("x-modeldeploy-model-version") == "1", answer.headers

                # 5 and 6. The first canary, watched, with Prometheus scraping and the dashboard read.
                address = f"{local_cluster.host_ip}:{free_port(local_cluster.host_ip)}"
                (tmp_path / "prometheus").mkdir()
                with (
                    running_prometheus(kube_api, namespace, tmp_path / "prometheus", address, namespace)
                    as prometheus,
                    Traffic(kube_api, namespace, NAME, rows(churn_bundles), rate=30) as traffic,
                ):  # fmt: skip
                    wait_for("traffic", lambda: len(traffic.results) > 40, timeout=90)
                    watch = Watch(kubeconfig, namespace)
                    try:
                        _canary(kubeconfig, kube_api, namespace, watch, prometheus, tmp_path)
                    finally:
                        code, errors = watch.stop()
                    assert code == 0, errors
                    frames = watch.frames()
                    assert traffic.failures() == [], traffic.failures()[:5]
                _check_frames(frames)
                print(f"walk done at {time.monotonic() - started:.0f} s, {len(frames)} frames watched")


def _check_pods(api: client.ApiClient, namespace: str, layout: Layout, registry: str) -> None:
    """Model servers and routers carry the pull secret and the placement, run on the real node, and
    their images came from the registry that asked for a login (the kubelet's Pulled Events)."""
    pulled = _pulled_images(api, namespace)
    servers = _pods(api, namespace, SERVING.format(NAME))
    routers = _pods(api, namespace, f"modeldeploy.io/deployment={NAME},app.kubernetes.io/component=router")
    assert servers, "no model server pods"
    assert routers, "no router pods"
    for pod in [*servers, *routers]:
        name = pod.metadata.name
        assert [s.name for s in pod.spec.image_pull_secrets or []] == [PULL_SECRET], name
        assert pod.spec.node_selector == PLACEMENT["nodeSelector"], name
        tolerations = [
            {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}
            for t in pod.spec.tolerations or []
        ]
        assert REAL_NODE_TOLERATION in tolerations, (name, tolerations)
        assert pod.spec.node_name == layout.real_node_name, name
        image = pod.spec.containers[0].image
        assert image.startswith(f"{registry}/modeldeploy/serving:"), (name, image)
        running = [c for c in pod.status.container_statuses or [] if c.ready and c.state.running]
        assert running, (name, pod.status.container_statuses)
        assert image in pulled.get(name, set()), (name, pulled.get(name))


def _status(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return dict(get_mdep(api, namespace, NAME).get("status") or {})


def _canary(
    kubeconfig: Path, api: client.ApiClient, namespace: str, watch: Watch, prometheus: str, folder: Path
) -> None:
    wait_for(
        "the watch's first frame", lambda: watch.frames() or watch.process.poll() is not None, timeout=60
    )
    if watch.process.poll() is not None:
        raise AssertionError(f"the watch ended at once: {watch.stop()}")
    patch = folder / "canary.yaml"  # docs/install.md's canary.yaml
    patch.write_text(yaml.safe_dump(CANARY_PATCH, sort_keys=False))
    kubectl(kubeconfig, "-n", namespace, "patch", "modeldeployment", NAME, "--type", "merge",
            "--patch-file", str(patch))  # fmt: skip
    began = time.monotonic()
    try:
        wait_for(
            "the canary at 50%, paused until resumed",
            lambda: (
                (s := _status(api, namespace)).get("canaryWeight") == 50
                and (s.get("pause") or {}).get("reason") == "Step"
                and s
            ),
            # 344 s in a run with the machine's load at 10 (a canary pod's start, and analysis windows
            # with too few samples to judge, which extend a step); the canary, the dashboard and the
            # promotion together took 197 s in a quieter run.
            timeout=600,
            interval=1,
        )
        # 6. Every panel of the dashboard has data: the rollout paused mid-way, the shadow step's
        # comparisons behind it, the drift windows closing under the traffic.
        print(f"canary paused at 50% {time.monotonic() - began:.0f} s after the patch")
        wait_for_dashboard_data(prometheus, namespace, NAME, timeout=240)
        print(f"every dashboard query answered {time.monotonic() - began:.0f} s after the patch")
        _run(PLUGIN, "--kubeconfig", str(kubeconfig), "-n", namespace, "promote", NAME, "--wait", "60")
        wait_for(
            "v2 promoted",
            lambda: (
                (s := _status(api, namespace)).get("modelVersion") == "2"
                and not s.get("canaryRevision")
                and s.get("phase") == "Ready"
            ),
            timeout=300,
            interval=1,
        )
        # The watch draws the end state (it redraws on change; a frame may lag the status by a beat).
        wait_for("the watch's Ready frame", lambda: _is_end(watch.frames()[-1]), timeout=60)
    except AssertionError:
        dump(api, namespace)
        print("\n".join(watch.frames()[-3:]))
        raise


def _is_end(frame: str) -> bool:
    # "Phase:       ✔ Ready - ...": the phase's symbol stays without colour.
    ready = re.search(r"^Phase:\s+\S*\s*Ready\b", frame, re.MULTILINE) is not None
    return (
        ready
        and "Canary:" not in frame
        and re.search(r"^Stable:.*version 2$", frame, re.MULTILINE) is not None
    )


def _check_frames(frames: list[str]) -> None:
    """The rendered frames show the rollout moving: each step in turn, the canary's weight going from
    0 to 50%, and the end state (v2 stable, no canary, Ready)."""
    steps = [s for s in map(_step_shown, frames) if s is not None]
    # Step 2 (setWeight 50 with the canary's one pod ready already) may pass within one status write.
    assert steps == sorted(steps), steps
    assert {1, 3, 4} <= set(steps), steps
    shadow = next(f for f in frames if _step_shown(f) == 1)
    assert "▶ 1. shadow 100% mirrored 20s (all checks)" in shadow, shadow
    assert "(weight 0%)" in shadow, shadow  # the new revision: mirrored copies only, no live weight yet
    paused = next(f for f in frames if _step_shown(f) == 4)
    assert "▶ 4. pause (until resumed)" in paused, paused
    assert "✓ 1. shadow" in paused, paused
    assert "✓ 3. analysis 20s (all checks)" in paused, paused
    assert "(weight 50%)" in paused, paused
    for check in ("errors", "score-shift"):  # each check's row, with a result and a value
        assert re.search(rf"^  {check}\s+(Pass|Inconclusive|Fail)\s+[0-9]", paused, re.MULTILINE), paused
    assert _is_end(frames[-1]), frames[-1]
    assert "\x1b[" not in "".join(frames)  # a pipe: no colour, no clear-screen
