"""A worker's way to a recording (src/uploads/fetch.py), against a real HTTP server: in place
when local, downloaded and then deleted when not, None when the API has it no more, a named
error when the API cannot be asked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from src.config import Settings, load_settings
from src.uploads import fetch
from src.uploads.fetch import RecordingFetchError

BYTES = b"RIFF" + bytes(range(256)) * 64


class Api(BaseHTTPRequestHandler):
    """Serves /api/v1/asr/audio/2026-12-02_001_ok; 404 for `gone`, 500 for anything else."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        Api.seen.append((self.path, self.headers.get("X-API-Key")))
        if self.path.endswith("_ok"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BYTES)))
            self.end_headers()
            self.wfile.write(BYTES)
            return
        self.send_response(404 if self.path.endswith("_gone") else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Api.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def remote(tmp_path: Path, url: str) -> Settings:
    return load_settings(storage_path=tmp_path, worker_api_url=url, api_key="k3y")


def test_a_missing_recording_is_downloaded_with_the_key_and_deleted_after(api: str, tmp_path: Path):
    settings = remote(tmp_path, api)
    with fetch.recording(settings, "2026-12-02_001_ok.wav") as path:
        assert path is not None and path.parent == settings.fetched_dir
        assert path.read_bytes() == BYTES
        assert path.suffix == ".wav"
    assert not path.exists()
    assert Api.seen == [("/api/v1/asr/audio/2026-12-02_001_ok", "k3y")]


def test_a_local_recording_is_opened_in_place_without_a_request(api: str, tmp_path: Path):
    settings = remote(tmp_path, api)
    settings.recordings_dir.mkdir(parents=True)
    (settings.recordings_dir / "2026-12-02_001_ok.wav").write_bytes(b"local")
    with fetch.recording(settings, "2026-12-02_001_ok.wav") as path:
        assert path == settings.recordings_dir / "2026-12-02_001_ok.wav"
    assert path.exists()
    assert Api.seen == []


def test_a_recording_the_api_no_longer_has_is_none(api: str, tmp_path: Path):
    with fetch.recording(remote(tmp_path, api), "2026-12-02_002_gone.wav") as path:
        assert path is None
    assert list((tmp_path / "fetched").iterdir()) == []


def test_an_api_error_or_no_api_is_a_fetch_error_and_leaves_nothing(api: str, tmp_path: Path):
    boom = fetch.recording(remote(tmp_path, api), "2026-12-02_003_boom.wav")
    with pytest.raises(RecordingFetchError, match="HTTP 500"), boom:
        pass
    closed = remote(tmp_path, "http://127.0.0.1:9")  # discard port: nothing listens
    with (
        pytest.raises(RecordingFetchError, match="ConnectError"),
        fetch.recording(closed, "2026-12-02_004_ok.wav"),
    ):
        pass
    assert list((tmp_path / "fetched").iterdir()) == []


def test_without_an_api_url_a_missing_recording_is_none(tmp_path: Path):
    with fetch.recording(load_settings(storage_path=tmp_path), "2026-12-02_001_ok.wav") as path:
        assert path is None
