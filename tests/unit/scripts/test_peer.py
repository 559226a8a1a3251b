"""The peer figure's pure parts (scripts/bench/peer.py): the thread overlay of a model dir, the
request body funasr-server parses, its answers, and the accounting of our side.

The figure itself, with the real funasr-server and our real stack, is
`python -m scripts.bench.peer --smoke`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request

from scripts.bench.client import Finished, Submitted
from scripts.bench.peer import (
    PEER_MODEL,
    HealthPoller,
    _ours_times,
    peer_upload,
    ratio,
    threads_overlay,
    transcript_of,
    with_ncpu,
)


def test_with_ncpu_appends_or_replaces_the_top_level_key() -> None:
    assert with_ncpu("model: X\nencoder_conf:\n  ncpu: 8\n", 1) == (
        "model: X\nencoder_conf:\n  ncpu: 8\nncpu: 1\n"
    )
    assert with_ncpu("ncpu: 4\nmodel: X", 1) == "ncpu: 1\nmodel: X"


def test_threads_overlay_links_the_same_files_and_changes_only_the_config(tmp_path: Path) -> None:
    src = tmp_path / "asr"
    src.mkdir()
    (src / "model.pt").write_bytes(b"weights")
    (src / "configuration.json").write_text("{}")
    (src / "config.yaml").write_text("model: SeacoParaformer\n")
    (tmp_path / "peer" / "asr-model").mkdir(parents=True)
    (tmp_path / "peer" / "asr-model" / "stale").write_text("from a previous run")

    out = threads_overlay(src, tmp_path / "peer" / "asr-model", 1)

    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "configuration.json",
        "model.pt",
    ]
    assert (out / "model.pt").is_symlink() and (out / "model.pt").resolve() == src / "model.pt"
    assert not (out / "config.yaml").is_symlink()
    assert (out / "config.yaml").read_text() == "model: SeacoParaformer\nncpu: 1\n"
    assert (src / "config.yaml").read_text() == "model: SeacoParaformer\n"  # untouched


def test_peer_upload_is_the_form_funasr_server_reads(tmp_path: Path) -> None:
    clip = tmp_path / "voice_7s.ogg"
    clip.write_bytes(b"OggS\x00 not really opus \r\n--x")
    upload = peer_upload(clip)

    async def parse() -> dict[str, object]:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": upload.body, "more_body": False}

        headers = [(b"content-type", upload.headers["content-type"].encode())]
        form = await Request({"type": "http", "method": "POST", "headers": headers}, receive).form()
        file = form["file"]
        assert isinstance(file, UploadFile)
        return {**{k: v for k, v in form.items() if k != "file"}, "file": await file.read()}

    form = asyncio.run(parse())
    assert form == {
        "model": PEER_MODEL,
        "language": "zh",
        "response_format": "json",
        "file": clip.read_bytes(),
    }
    assert upload.audio_bytes == len(clip.read_bytes())


def test_transcript_of_reads_text_and_names_every_failure() -> None:
    assert transcript_of(200, json.dumps({"text": "还 必 据"}).encode()) == ("还 必 据", None)
    assert transcript_of(200, b'{"text": ""}') == ("", None)
    assert transcript_of(500, b"Internal Server Error") == (None, "500 Internal Server Error")
    assert transcript_of(200, b"<html>")[1] == "200 not JSON: b'<html>'"
    assert transcript_of(200, b'{"detail": "x"}')[1] == "200 without text: {'detail': 'x'}"
    assert transcript_of(200, b'"bare"')[1] == "200 without text: bare"


def test_ratio() -> None:
    assert ratio(30.0, 12.0) == 2.5
    assert ratio(None, 12.0) is None
    assert ratio(3.0, None) is None
    assert ratio(3.0, 0.0) is None


def _finished(
    task_id: str, status: str, finished: float | None, error: str | None = None
) -> Finished:
    rec = {"status": status, "error": error}
    return Finished(task_id, status, 100.0, 100.5, finished, 0.2, 7.0, "worker-1", rec)


def test_ours_times_pairs_send_with_finished_at_and_counts_each_lost_clip_once() -> None:
    sent = [
        Submitted(100.0, 0.01, 200, "a"),
        Submitted(100.1, 0.01, 200, "b"),
        Submitted(100.2, 0.01, 503, None, "queue full"),
        Submitted(100.3, 0.01, 200, "c"),
    ]
    done = {"a": _finished("a", "done", 101.5), "b": _finished("b", "failed", 101.0, "bad audio")}

    times, errors = _ours_times(sent, done)

    assert times == [(100.0, 101.5)]
    assert errors == ["failed: bad audio", "submit 503 queue full", "not done before the timeout"]


class _Stalls(BaseHTTPRequestHandler):
    """Answers 200, but the first request takes 0.5 s: one request at a time, as funasr-server's
    event loop while it decodes a clip."""

    first = True

    def do_GET(self) -> None:
        if _Stalls.first:
            _Stalls.first = False
            time.sleep(0.5)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass  # no access log on the test's stderr


class _Serial(HTTPServer):
    """One request at a time, with room for the probes queued behind a stall."""

    request_queue_size = 64


def test_health_poller_keeps_probing_a_stalled_server_and_times_every_probe() -> None:
    server = _Serial(("127.0.0.1", 0), _Stalls)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with HealthPoller(f"http://127.0.0.1:{server.server_port}/health", 0.05) as poller:
            time.sleep(0.7)
    finally:
        server.shutdown()
        server.server_close()
    assert poller.errors == []
    assert len(poller.latencies) >= 10  # ~14 probes fired on schedule, stall or not
    assert max(poller.latencies) >= 0.45  # the first probe waited out the stall
    assert sum(1 for x in poller.latencies if x >= 0.2) >= 3  # and the ones queued behind it
