"""The serving and operator images, built by `hack/images.sh` (what `make images` runs) once per
session and run without a cluster: runc (the runtime a kubelet drives) with the restrictions of the
chart's and the operator's pods: a read-only root filesystem, the image's numeric non-root user, no
capabilities, no new privileges, and writable emptyDir-like folders (0777, bound) only where the pods have
volumes (/tmp, and /var/cache/modeldeploy for model servers; none for the router). The containers
share the host's network namespace, so they listen on 127.0.0.1 like the other integration tests.
"""

from __future__ import annotations

import copy
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import serving_harness
from churn_example import load_churn
from local_processes import free_port

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
TOOLS = ("buildah", "skopeo", "umoci", "mmdebstrap", "runc")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
RUN_AS = 10001


def _skip_reason() -> str:
    if MISSING:
        return f"{', '.join(MISSING)} missing: make system-deps (hack/install-system-deps.sh) installs them"
    if os.geteuid() != 0:
        return "building images (buildah overlay storage, mmdebstrap) and runc need root here"
    return ""


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "-"),
    # The first test pays for a cold build of both images (8 minutes on 2 busy cores) in its setup.
    pytest.mark.timeout(2400),
]


def _app_version() -> str:
    match = re.search(
        r'^appVersion:\s*"?([^"\s]+)"?', (REPO / "charts/modeldeploy/Chart.yaml").read_text(), re.M
    )
    assert match
    return match.group(1)


@dataclass
class Image:
    name: str
    ref: str
    config: dict[str, Any]  # the OCI image config (User, Env, Labels, ...)
    rootfs: Path  # the image's root filesystem: a buildah working container's mount
    runtime_config: dict[str, Any]  # runc's default config.json with the image's user, env and command


STORAGE = CACHE / "images"
CONTAINER_PREFIX = "modeldeploy-images-test-"


def _buildah(*args: str) -> str:
    """buildah on hack/images.sh's storage (the same --root, --runroot and driver)."""
    result = subprocess.run(
        [
            "buildah",
            "--root",
            str(STORAGE / "storage"),
            "--runroot",
            str(STORAGE / "run"),
            "--storage-driver",
            "overlay",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def _remove_stale_containers() -> None:
    """This fixture's working containers left by a session that was killed before its teardown (named
    by the session's process id), so that their mounts do not outlive it; another live session's stay."""
    stale = []
    for name in _buildah("containers", "--noheading", "--format", "{{.ContainerName}}").splitlines():
        pid = name.removeprefix(CONTAINER_PREFIX).split("-")[0]
        if name.startswith(CONTAINER_PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            stale.append(name)
    if stale:
        _buildah("rm", *stale)


def _image_runtime_config(config: dict[str, Any], spec_dir: Path) -> dict[str, Any]:
    """What `umoci unpack` derived from an image: the runtime's default config (`runc spec`) with the
    image's user, environment, working directory and command (Entrypoint + Cmd)."""
    spec_dir.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(spec_dir)], check=True, timeout=60)
    spec: dict[str, Any] = json.loads((spec_dir / "config.json").read_text())
    image = config["config"]
    # Numeric (the labels test asserts it): the runtime takes it as is, with no /etc/passwd to read.
    user = re.fullmatch(r"(\d+):(\d+)", image["User"])
    assert user, f"the image's user is not a numeric uid:gid: {image['User']!r}"
    process = spec["process"]
    process["user"] = {"uid": int(user[1]), "gid": int(user[2])}
    # The image's variables over the default ones (PATH replaced, TERM kept), as umoci merged them.
    env = dict(item.split("=", 1) for item in [*process["env"], *(image.get("Env") or [])])
    process["env"] = [f"{key}={value}" for key, value in env.items()]
    process["cwd"] = image.get("WorkingDir") or "/"
    process["args"] = [*(image.get("Entrypoint") or []), *(image.get("Cmd") or [])]
    return spec


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Image]]:
    """Build both images with the script `make images` runs (no push), then mount each for runc.

    Each image's root filesystem is a buildah working container's mount (an overlay of the image's
    layers in buildah's storage), not a copy: `skopeo copy` to an OCI layout (gzip of every layer)
    and `umoci unpack` made this fixture's setup 130 s of a warm CI run, for the same files; with
    the images unchanged, 342 s before and 6 s after on a loaded machine (docs/benchmarks.md). runc
    still runs it read-only (`root.readonly`); what runc creates for its mount points lands in the
    container's own layer, which the teardown removes with the container (the image is untouched).
    """
    result = subprocess.run(
        [str(REPO / "hack/images.sh")],
        # No archive: the images are read from buildah's storage below (exporting the serving image's
        # gzip archive took 27-62 s after each source edit; `make images` still exports by default).
        env={**os.environ, "PUSH": "0", "EXPORT": "0"},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    built, ids = {}, {}
    for line in result.stdout.splitlines():
        name, ref, image_id = line.split()
        built[name], ids[name] = ref, image_id
    assert set(built) == {"serving", "operator"}
    root = tmp_path_factory.mktemp("images")
    source = f"containers-storage:[overlay@{STORAGE / 'storage'}+{STORAGE / 'run'}]"
    _remove_stale_containers()
    containers: list[str] = []
    try:
        out = {}
        for name, ref in built.items():
            # By id, so it is the image just built even if a tag moved since; the container holds the
            # image (buildah rmi refuses an image in use) until the teardown removes it.
            container = f"{CONTAINER_PREFIX}{os.getpid()}-{name}"
            containers.append(container)
            _buildah("from", "--pull-never", "--quiet", "--name", container, ids[name])
            rootfs = Path(_buildah("mount", container))
            config = json.loads(
                subprocess.run(
                    ["skopeo", "inspect", "--config", f"{source}{ids[name]}"],
                    check=True,
                    capture_output=True,
                    timeout=120,
                ).stdout
            )
            out[name] = Image(
                name=name,
                ref=ref,
                config=config,
                rootfs=rootfs,
                runtime_config=_image_runtime_config(config, root / f"{name}-spec"),
            )
        yield out
    finally:
        # Unmounts and removes them, even when a test failed; the images stay in the storage.
        existing = set(_buildah("containers", "--noheading", "--format", "{{.ContainerName}}").split())
        if to_remove := [c for c in containers if c in existing]:
            _buildah("rm", *to_remove)


@dataclass
class Container:
    id: str
    state: Path
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runc", "--root", str(self.state), "exec", self.id, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            subprocess.run(
                ["runc", "--root", str(self.state), "kill", self.id, "TERM"], check=False, timeout=30
            )
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                subprocess.run(
                    ["runc", "--root", str(self.state), "kill", self.id, "KILL"], check=False, timeout=30
                )
                self.process.wait(20)
        subprocess.run(
            ["runc", "--root", str(self.state), "delete", "--force", self.id], check=False, timeout=30
        )


def _runtime_config(
    image: Image,
    args: list[str] | None,
    env: dict[str, str],
    empty_dirs: dict[str, Path],
    binds: dict[str, Path],
) -> dict[str, Any]:
    """The pods' restrictions on the image's runtime config: read-only root, no capabilities, host network."""
    config = copy.deepcopy(image.runtime_config)
    config["root"] = {"path": str(image.rootfs), "readonly": True}
    process = config["process"]
    process["terminal"] = False
    if args is not None:
        process["args"] = args
    process["env"] = [*process.get("env", []), *(f"{k}={v}" for k, v in env.items())]
    process["noNewPrivileges"] = True
    process["capabilities"] = {
        key: [] for key in ("bounding", "effective", "inheritable", "permitted", "ambient")
    }
    process.pop("rlimits", None)
    mounts = config.setdefault("mounts", [])
    for path, source in empty_dirs.items():  # as a kubelet makes an emptyDir: a 0777 folder, bound
        mounts.append(
            {"destination": path, "type": "bind", "source": str(source), "options": ["rbind", "rw"]}
        )
    for destination, source in binds.items():
        mounts.append(
            {"destination": destination, "type": "bind", "source": str(source), "options": ["rbind", "ro"]}
        )
    linux = config.setdefault("linux", {})
    # The host's network: the container listens on the host's 127.0.0.1 (a pod has its own, but the
    # test reaches it without a CNI).
    linux["namespaces"] = [ns for ns in linux.get("namespaces", []) if ns["type"] != "network"]
    return config


@pytest.fixture
def run_container(tmp_path: Path) -> Iterator[Any]:
    started: list[Container] = []

    def start(
        image: Image,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        empty_dirs_at: tuple[str, ...] = (),
        binds: dict[str, Path] | None = None,
    ) -> Container:
        cid = f"md-test-{uuid.uuid4().hex[:10]}"
        bundle = tmp_path / cid
        bundle.mkdir()
        empty_dirs = {}
        for index, path in enumerate(empty_dirs_at):
            folder = bundle / f"empty-dir-{index}"
            folder.mkdir()
            folder.chmod(0o777)
            empty_dirs[path] = folder
        config = _runtime_config(image, args, env or {}, empty_dirs, binds or {})
        (bundle / "config.json").write_text(json.dumps(config))
        state = tmp_path / "runc-state"
        log = bundle / "output.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                ["runc", "--root", str(state), "run", "--bundle", str(bundle), cid],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        container = Container(cid, state, process, log)
        started.append(container)
        return container

    yield start
    for container in started:
        container.stop()


def _wait_http(url: str, container: Container, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container.process.poll() is not None:
            raise AssertionError(
                f"container exited with {container.process.returncode}:\n{container.output()}"
            )
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout}s:\n{container.output()}")


@pytest.fixture(scope="module")
def churn_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The churn example's v1 bundle (XGBoost + checked ONNX export) and an XGBoost-only bundle."""
    from modeldeploy_serving.pack import pack

    churn = load_churn()
    root = tmp_path_factory.mktemp("churn")
    built = churn.build(root / "bundles", rows=2000, trees=20, seed=11)
    x, y = churn.generate(2000, 11)
    artifacts = root / "artifacts"
    churn.train_and_export(x[:1600], y[:1600], artifacts, 20, 11)
    churn.write_csv(artifacts / "train.csv", x[:1600], y[:1600])
    pack(
        model=artifacts / "model.ubj",
        onnx=None,
        export_onnx=False,  # an xgboost-only bundle (pack exports ONNX itself by default)
        train_data=artifacts / "train.csv",
        validation_data=None,
        label="retained",
        name="churn",
        version="v1",
        out=root / "bundles" / "xgb-only",
    )
    return {"root": root / "bundles", "v1": built["v1"], "xgb-only": root / "bundles" / "xgb-only"}


@pytest.fixture(scope="module")
def bundle_server(churn_bundles: dict[str, Path]) -> Iterator[str]:
    """The bundles over plain HTTP on 127.0.0.1, as a model store: the server downloads into its cache."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(churn_bundles["root"]))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_images_are_labelled_non_root_and_lean(images: dict[str, Image]) -> None:
    for image in images.values():
        assert image.ref.endswith(f"/modeldeploy/{image.name}:{_app_version()}")
        labels = image.config["config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == _app_version()
        assert labels["org.opencontainers.image.source"].startswith("https://")
        revision_label = labels["org.opencontainers.image.revision"]
        # The commit the image was first built from: unchanged inputs are not rebuilt for a later one
        # (and the cache outlives a checkout, so that commit need not be in this one's history).
        assert re.fullmatch(r"[0-9a-f]{40}", revision_label)
        # Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
        assert image.config["config"]["User"] == f"{RUN_AS}:{RUN_AS}"
        root = image.rootfs
        leftovers = [
            path.relative_to(root)
            for pattern in (
                "usr/bin/*gcc*",
                "usr/bin/cc",
                "usr/bin/c++",
                "usr/bin/*g++*",
                "usr/bin/ld",
                "usr/bin/pip*",
                "usr/local/bin/pip*",
                "usr/local/bin/uv*",
                "opt/venv/bin/pip*",
                "opt/venv/bin/uv*",
                "usr/lib/python3/dist-packages/pip",
                "usr/local/lib/python3*/site-packages/pip",
                "opt/venv/lib/python3*/site-packages/pip",
                "opt/venv/lib/python3*/site-packages/uv",
            )
            for path in root.glob(pattern)
        ]
        assert leftovers == [], f"{image.name}: compilers or installers left in the final stage"
        # The virtualenv's interpreter (a link into the base) resolves in the final image.
        python = root / "opt/venv/bin/python"
        target = os.readlink(python)
        assert (
            (root / target.lstrip("/")).exists()
            if target.startswith("/")
            else (python.parent / target).exists()
        )
    site = next(images["serving"].rootfs.glob("opt/venv/lib/python3*/site-packages"))
    assert (site / "xgboost").is_dir()
    assert not list(site.glob("nvidia*")), "the CPU-only xgboost wheel has no CUDA libraries"


def test_serving_image_serves_the_churn_bundle_read_only(
    images: dict[str, Image],
    churn_bundles: dict[str, Path],
    bundle_server: str,
    run_container: Any,
    tmp_path: Path,
) -> None:
    """Downloaded into the cache volume, two workers (Prometheus multiprocess files in /tmp), answers
    V2 infer on 127.0.0.1 with the host's predictions, and cannot write its root filesystem."""
    rows = load_churn().generate(64, 99)[0].astype(np.float32)
    body = serving_harness.v2_body(rows)
    expected = {}
    for name in ("v1", "xgb-only"):
        host = serving_harness.start_server(tmp_path, str(churn_bundles[name]))
        try:
            host.wait_ready()
            with host.client() as client:
                response = client.post("/v2/models/churn/infer", json=body)
            assert response.status_code == 200, response.text
            expected[name] = response.json()["outputs"]
        finally:
            host.stop()

    for name in ("v1", "xgb-only"):
        port = free_port()
        container = run_container(
            images["serving"],
            env={
                "MODELDEPLOY_SERVER_MODEL_URI": f"{bundle_server}/{name}/",
                "MODELDEPLOY_SERVER_HOST": "127.0.0.1",
                "MODELDEPLOY_SERVER_PORT": str(port),
                "MODELDEPLOY_SERVER_WORKERS": "2",
                "MODELDEPLOY_SERVER_LOG_LEVEL": "info",
            },
            # What the operator's serving pods mount: the model cache and /tmp (emptyDirs).
            empty_dirs_at=("/tmp", "/var/cache/modeldeploy"),
        )
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/v2/health/ready", container, timeout=120)
        response = httpx.post(f"{url}/v2/models/churn/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text + container.output()
        assert response.json()["outputs"] == expected[name], name
        metrics = httpx.get(f"{url}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "modeldeploy_" in metrics.text

        whoami = container.exec("python3", "-c", "import os; print(os.getuid(), os.getgid())")
        assert whoami.stdout.split() == [str(RUN_AS), str(RUN_AS)], whoami.stderr
        # The C extension module, compiled in the build stage (serving/hatch_build.py), loads here.
        extension = container.exec("python3", "-c", "import modeldeploy_serving._predlog_lines")
        assert extension.returncode == 0, extension.stderr
        write = container.exec("python3", "-c", "open('/opt/venv/probe', 'w')")
        assert write.returncode != 0
        assert "Read-only file system" in write.stderr
        cached = container.exec(
            "python3", "-c", "import os; print(os.listdir('/var/cache/modeldeploy/models'))"
        )
        assert cached.returncode == 0, cached.stderr
        assert cached.stdout.strip() != "[]", "the bundle is downloaded into the cache volume"
        container.stop()


def test_router_runs_read_only_without_volumes(
    images: dict[str, Image],
    churn_bundles: dict[str, Path],
    bundle_server: str,
    run_container: Any,
    tmp_path: Path,
) -> None:
    """The router pod has no volumes at all: it must run on a read-only root with nothing writable."""
    server_port, router_port = free_port(), free_port()
    server = run_container(
        images["serving"],
        env={
            "MODELDEPLOY_SERVER_MODEL_URI": f"{bundle_server}/v1/",
            "MODELDEPLOY_SERVER_HOST": "127.0.0.1",
            "MODELDEPLOY_SERVER_PORT": str(server_port),
        },
        empty_dirs_at=("/tmp", "/var/cache/modeldeploy"),
    )
    config_dir = tmp_path / "router"
    config_dir.mkdir()
    (config_dir / "router.json").write_text(
        json.dumps(
            {
                "generation": 1,
                "deployment": {"namespace": "test", "name": "churn"},
                "arms": [
                    {
                        "variant": "default",
                        "revision": "r1",
                        "weight_bp": 10_000,
                        "service": "svc",
                        "model_name": "churn",
                    }
                ],
            }
        )
    )
    (config_dir / "endpoints.json").write_text(json.dumps({"svc": [{"address": f"127.0.0.1:{server_port}"}]}))
    router = run_container(
        images["serving"],
        args=[
            "modeldeploy-router",
            "--config-file",
            "/etc/modeldeploy/router.json",
            "--endpoints-file",
            "/etc/modeldeploy/endpoints.json",
            "--host",
            "127.0.0.1",
            "--port",
            str(router_port),
        ],
        binds={"/etc/modeldeploy": config_dir},
    )
    _wait_http(f"http://127.0.0.1:{server_port}/v2/health/ready", server, timeout=120)
    _wait_http(f"http://127.0.0.1:{router_port}/readyz", router, timeout=60)
    rows = load_churn().generate(8, 5)[0].astype(np.float32)
    response = httpx.post(
        f"http://127.0.0.1:{router_port}/v2/models/churn/infer",
        json=serving_harness.v2_body(rows),
        timeout=30,
    )
    assert response.status_code == 200, response.text + router.output()
    assert response.headers["x-modeldeploy-revision"] == "r1"


def test_operator_image_starts_and_prints_its_version(images: dict[str, Image], run_container: Any) -> None:
    """Imports every module of the operator (kopf, the Kubernetes client) on a read-only root, as
    its pod does, and answers --version and --help."""
    operator = images["operator"]
    entrypoint = operator.config["config"]["Entrypoint"]
    assert entrypoint == ["modeldeploy-operator"]
    for flag, expected in (
        ("--version", f"modeldeploy-operator {_app_version()}"),
        ("--help", "usage: modeldeploy-operator"),
    ):
        container = run_container(operator, args=[*entrypoint, flag], empty_dirs_at=("/tmp",))
        assert container.process.wait(120) == 0, container.output()
        assert expected in container.output()
