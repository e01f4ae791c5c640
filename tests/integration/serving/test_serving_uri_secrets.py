"""Model URIs: redirects only within the bundle's origin; credentials (userinfo, pre-signed query
values, tokens) never in errors, `/v2/health/ready` or the log; validation errors never echo the
file. Real HTTP servers on 127.0.0.1, the real storage code, and one real server process."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.bundle import parse_manifest, verify_bundle
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage import fetch_bundle

from serving_harness import Bundles, ServerFactory

SECRETS = ("hunter2", "SIGSECRET", "TOKSECRET")
SECRET_URI_PARTS = "alice:hunter2@"
SECRET_QUERY = "?X-Amz-Signature=SIGSECRET&token=TOKSECRET"


class Store:
    """Bundle folders under `root`; `/same/<x>` redirects to `/<x>` (same origin), `/away/<x>` to
    `elsewhere`, `/loop/<x>` to itself."""

    def __init__(self, root: Path, elsewhere: str = "") -> None:
        self.root = root
        self.elsewhere = elsewhere
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                path = unquote(urlsplit(self.path).path)
                if path.startswith("/same/"):
                    self._redirect(path.removeprefix("/same"))
                    return
                if path.startswith("/away/"):
                    self._redirect(outer.elsewhere + path.removeprefix("/away"))
                    return
                if path.startswith("/loop/"):
                    self._redirect(path)
                    return
                file = outer.root / path.lstrip("/")
                if not file.resolve().is_relative_to(outer.root.resolve()) or not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stores(bundles: Bundles) -> Iterator[tuple[Store, Store]]:
    elsewhere = Store(bundles.root)
    store = Store(bundles.root, elsewhere.url)
    yield store, elsewhere
    store.close()
    elsewhere.close()


def settings(tmp_path: Path) -> ServerSettings:
    return ServerSettings(model_cache_dir=str(tmp_path / "cache"), download_timeout_seconds=10)


def with_secrets(url: str) -> str:
    return url.replace("http://", f"http://{SECRET_URI_PARTS}", 1)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


def test_a_redirect_within_the_origin_is_followed(stores: tuple[Store, Store], tmp_path: Path) -> None:
    store, _ = stores
    folder = fetch_bundle(f"{store.url}/same/v1", settings(tmp_path))
    assert (folder / "manifest.json").is_file()
    assert "/same/v1/manifest.json" in store.requests
    assert "/v1/manifest.json" in store.requests


def test_a_redirect_to_another_origin_is_refused(stores: tuple[Store, Store], tmp_path: Path) -> None:
    store, elsewhere = stores
    with pytest.raises(BundleError, match="redirects to another origin") as refused:
        fetch_bundle(with_secrets(f"{store.url}/away/v1"), settings(tmp_path))
    assert elsewhere.requests == []  # never asked
    assert_no_secret(str(refused.value))


def test_a_redirect_loop_ends(stores: tuple[Store, Store], tmp_path: Path) -> None:
    store, _ = stores
    with pytest.raises(BundleError, match="more than 5 redirects"):
        fetch_bundle(f"{store.url}/loop/v1", settings(tmp_path))
    assert len(store.requests) == 6


def test_errors_never_carry_credentials(stores: tuple[Store, Store], tmp_path: Path) -> None:
    store, _ = stores
    for uri in (
        with_secrets(f"{store.url}/missing"),
        f"{store.url}/missing{SECRET_QUERY}",
        with_secrets("http://127.0.0.1:1/refused"),  # connection refused: the client's message is not used
        "ftp://alice:hunter2@example.com/x" + SECRET_QUERY,
    ):
        with pytest.raises(BundleError) as failed:
            fetch_bundle(uri, settings(tmp_path))
        assert_no_secret(str(failed.value))


def test_a_manifest_error_does_not_echo_the_file(bundles: Bundles, tmp_path: Path) -> None:
    bundle = tmp_path / "bad"
    shutil.copytree(bundles.v1, bundle)
    (bundle / "manifest.json").write_text('{"format": "xgboost", "name": "PRIVATE-CONTENT-1234", "files": 7}')
    with pytest.raises(BundleError) as invalid:
        verify_bundle(bundle, None, 10**9)
    assert "PRIVATE-CONTENT-1234" not in str(invalid.value)
    assert "invalid manifest.json" in str(invalid.value)


def test_a_manifest_error_does_not_echo_the_file_when_parsed(tmp_path: Path) -> None:
    with pytest.raises(BundleError) as invalid:
        parse_manifest(b'{"format": "xgboost", "name": "PRIVATE-CONTENT-1234", "files": 7}')
    assert "PRIVATE-CONTENT-1234" not in str(invalid.value)
    assert "files" in str(invalid.value)  # where it is wrong is still said


def test_health_ready_and_log_never_show_credentials(
    stores: tuple[Store, Store], serve: ServerFactory
) -> None:
    store, _ = stores
    server = serve(with_secrets(f"{store.url}/away/v1") + SECRET_QUERY)
    deadline = time.monotonic() + 60
    with server.client() as c:
        while time.monotonic() < deadline:
            ready = c.get("/v2/health/ready").json()
            if ready["state"] != "loading":
                break
            time.sleep(0.05)
        assert ready["state"] == "failed"
        assert "another origin" in ready["error"]
        assert_no_secret(ready["error"])
        assert_no_secret(c.get("/metrics").text)
    server.stop()
    assert_no_secret(server.log.read_text())
