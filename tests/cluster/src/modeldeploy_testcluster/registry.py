"""The local image registry (CNCF distribution, built from its Go module) and the harness's own images.

The registry listens on the bridge's host address only (10.244.0.1:5000, plain HTTP: nothing outside
this machine can reach it, and the real node's containerd is told to pull from it over HTTP). Its
storage lies in the cache folder, so images pushed once survive `make cluster-down`.

The harness builds three tiny images itself with buildah (`buildah from scratch`, copy, commit
straight into the registry), each tagged with the digest of its content, so an image already in the
registry is never rebuilt:
- `pause`, the pod sandbox (tests/cluster/gotools/pause);
- `coredns`, the cluster DNS (CoreDNS from its Go module);
- `busybox`, a test image (Debian's busybox-static and its applet links).
buildah runs with its own storage in the cache folder and the vfs driver: an image of a few MB costs
nothing extra to copy, and vfs mounts nothing, so no mount can outlive a build.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modeldeploy_testcluster.layout import Layout, binaries_dir, cache_dir, registry_storage_dir

REPOSITORY_PREFIX = "modeldeploy-cluster"  # the harness's own images; the project's are modeldeploy/*


class RegistryError(RuntimeError):
    pass


def config_yaml(layout: Layout, address: str | None = None, htpasswd: Path | None = None) -> str:
    """The registry's configuration: the local registry's, or (`address`, `htpasswd`) another instance
    on the same storage that asks for a login (authenticated_registry)."""
    storage = registry_storage_dir()
    auth = (
        f"""auth:
  htpasswd:
    realm: modeldeploy-tests
    path: {htpasswd}
"""
        if htpasswd
        else ""
    )
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {address or layout.registry}
{auth}"""


def argv(layout: Layout) -> list[str]:
    config = layout.state_dir / "registry.yml"
    config.write_text(config_yaml(layout))
    registry_storage_dir().mkdir(parents=True, exist_ok=True)
    return [str(binaries_dir() / "registry"), "serve", str(config)]


def environment() -> dict[str, str]:
    """The registry's OpenTelemetry tracing would try to export to an OTLP endpoint: off."""
    return {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}


def is_up(layout: Layout) -> bool:
    try:
        with urllib.request.urlopen(f"http://{layout.registry}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def has_image(layout: Layout, repository: str, tag: str) -> bool:
    request = urllib.request.Request(
        f"http://{layout.registry}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise RegistryError(
            f"registry {layout.registry}: HTTP {error.code} for {repository}:{tag}"
        ) from error
    except (OSError, urllib.error.URLError) as error:
        raise RegistryError(f"registry {layout.registry} unreachable: {error}") from error


@dataclass(frozen=True)
class ScratchImage:
    """An image made of files copied onto an empty root."""

    name: str  # repository under REPOSITORY_PREFIX
    files: dict[str, Path]  # path in the image -> file on this machine
    symlinks: dict[str, str]  # path in the image -> link target
    entrypoint: list[str]
    user: str
    dirs: tuple[str, ...] = ("tmp",)

    def tag(self) -> str:
        digest = hashlib.sha256()
        for target, source in sorted(self.files.items()):
            digest.update(target.encode() + b"\0" + hashlib.sha256(source.read_bytes()).digest())
        for link, points_to in sorted(self.symlinks.items()):
            digest.update(f"{link}->{points_to}".encode())
        digest.update(repr((self.entrypoint, self.user, self.dirs)).encode())
        return digest.hexdigest()[:16]

    def reference(self, layout: Layout) -> str:
        return f"{layout.registry}/{REPOSITORY_PREFIX}/{self.name}:{self.tag()}"


def pause_image() -> ScratchImage:
    return ScratchImage(
        name="pause",
        files={"pause": binaries_dir() / "pause"},
        symlinks={},
        entrypoint=["/pause"],
        user="65535:65535",
        dirs=(),
    )


def coredns_image() -> ScratchImage:
    return ScratchImage(
        name="coredns",
        files={"coredns": binaries_dir() / "coredns"},
        symlinks={},
        entrypoint=["/coredns"],
        user="65532:65532",
        dirs=(),
    )


BUSYBOX = Path("/bin/busybox")


def busybox_image() -> ScratchImage:
    """A shell and the usual tools in about 2 MB: Debian's static busybox and a link per applet."""
    listing = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    applets = [a for a in listing.stdout.split() if a and a != "busybox"]
    return ScratchImage(
        name="busybox",
        files={"bin/busybox": BUSYBOX},
        symlinks={f"bin/{applet}": "busybox" for applet in applets},
        entrypoint=["/bin/sh"],
        user="65534:65534",
    )


def _buildah(*args: str, stdin: str | None = None) -> str:
    store = cache_dir() / "buildah"
    base = [
        "buildah",
        f"--root={store / 'storage'}",
        f"--runroot={store / 'run'}",
        "--storage-driver=vfs",
    ]
    result = subprocess.run([*base, *args], capture_output=True, text=True, input=stdin, check=False)
    if result.returncode != 0:
        raise RegistryError(f"buildah {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def ensure_image(layout: Layout, image: ScratchImage) -> str:
    """Build and push `image` unless the registry has it already; returns its reference."""
    reference = image.reference(layout)
    if has_image(layout, f"{REPOSITORY_PREFIX}/{image.name}", image.tag()):
        return reference
    if shutil.which("buildah") is None:
        raise RegistryError("buildah is missing: run `make system-deps`")
    with tempfile.TemporaryDirectory(prefix="mdc-image-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        for target, source in image.files.items():
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / target)
        for link, points_to in image.symlinks.items():
            (root / link).parent.mkdir(parents=True, exist_ok=True)
            (root / link).symlink_to(points_to)
        for folder in image.dirs:
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder).chmod(0o1777)
        container = _buildah("from", "--name", f"mdc-{image.name}-{time.monotonic_ns()}", "scratch")
        try:
            _buildah("copy", container, f"{root}/", "/")
            _buildah(
                "config",
                "--entrypoint",
                "[" + ", ".join(f'"{part}"' for part in image.entrypoint) + "]",
                "--user",
                image.user,
                "--label",
                "org.opencontainers.image.source=modeldeploy tests/cluster",
                container,
            )
            _buildah("commit", "--format=oci", "--tls-verify=false", container, f"docker://{reference}")
        finally:
            _buildah("rm", container)
    return reference


# -- a second instance that asks for a login --------------------------------------------------------
@dataclass(frozen=True)
class AuthenticatedRegistry:
    """A registry at `address` that answers only with `username`/`password` (HTTP basic, plain HTTP
    on the bridge), for the tests of private-registry pulls."""

    address: str
    username: str
    password: str


def bcrypt_hash(password: str) -> str:
    """An htpasswd entry's hash: distribution accepts bcrypt only. The `bcrypt` package is not a
    dependency; the standard library's crypt (libxcrypt, `$2b$`; deprecated, but here until Python
    3.13) makes it. Cost 4, the minimum: the registry checks the hash on every request, and a pull is
    several requests."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if not hashed or not hashed.startswith("$2"):
        raise RegistryError("this libc's crypt() makes no bcrypt hashes")
    return hashed


def answers_unauthorized(address: str) -> bool:
    """`/v2/` asks for credentials (401 with a Basic challenge): the registry is up and guarded."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2):
            return False
    except urllib.error.HTTPError as error:
        return error.code == 401 and "Basic" in (error.headers.get("WWW-Authenticate") or "")
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def authenticated_registry(
    layout: Layout, folder: Path, username: str, password: str
) -> Iterator[AuthenticatedRegistry]:
    """Another instance of the local registry's binary, on the bridge's host address at a free port,
    with htpasswd authentication; the real node's containerd pulls from it over plain HTTP
    (realnode.trusted_registry). It serves the local registry's storage: the images already pushed
    there need no second upload (`hack/images.sh` against it pushes manifests, after a HEAD of each
    blob), and both instances of distribution on one filesystem storage is the way it scales out.
    Stopped, and the node's hosts.toml for it removed, on the way out."""
    from modeldeploy_testcluster import realnode

    with socket.socket() as s:
        s.bind((layout.host_ip, 0))
        address = f"{layout.host_ip}:{s.getsockname()[1]}"
    htpasswd = folder / "htpasswd"
    htpasswd.write_text(f"{username}:{bcrypt_hash(password)}\n")
    config = folder / "registry.yml"
    config.write_text(config_yaml(layout, address, htpasswd))
    with (folder / "registry.log").open("wb") as log:
        server = subprocess.Popen(
            [str(binaries_dir() / "registry"), "serve", str(config)],
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not answers_unauthorized(address):
            if server.poll() is not None or time.monotonic() > deadline:
                log_text = (folder / "registry.log").read_text()[-2000:]
                raise RegistryError(f"the registry at {address} did not start: {log_text}")
            time.sleep(0.1)
        with realnode.trusted_registry(layout, address):
            yield AuthenticatedRegistry(address, username, password)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
