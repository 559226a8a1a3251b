"""The peer figure's parts (scripts/bench/peer.py): the overlay of a model dir that gives
funasr-server our threads, VAD and punctuation (checked with FunASR's real AutoModel), the request
body it parses, its answers, the accounting of our side, and how the report words each peer.

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

import pytest
import yaml
from starlette.datastructures import UploadFile
from starlette.requests import Request

from scripts.bench import report
from scripts.bench.client import Finished, Submitted
from scripts.bench.peer import (
    PEER_MODEL,
    HealthPoller,
    PeerServer,
    _ours_times,
    overlay,
    peer_keys,
    peer_upload,
    ratio,
    transcript_of,
    with_keys,
)
from scripts.bench.results import (
    Config,
    Figures,
    PeerFigure,
    PeerPipeline,
    PeerSide,
    Result,
    RunInfo,
    Stats,
)
from tests.support.tiny_models import ModelDirs

MODELS = {"asr": "/m/asr", "vad": "/m/vad: odd", "punc": "/m/punc"}


def test_with_keys_appends_or_replaces_top_level_keys_only() -> None:
    assert with_keys("model: X\nencoder_conf:\n  ncpu: 8\n", {"ncpu": 1}) == (
        "model: X\nencoder_conf:\n  ncpu: 8\nncpu: 1\n"
    )
    assert with_keys("ncpu: 4\nmodel: X", {"ncpu": 1}) == "ncpu: 1\nmodel: X"
    # A path is written as a quoted scalar, and a backslash in it is no regex escape.
    out = with_keys("vad_model: fsmn-vad\n", {"vad_model": "C:\\m\\1", "punc_model": "/p: q"})
    assert yaml.safe_load(out) == {"vad_model": "C:\\m\\1", "punc_model": "/p: q"}


def test_peer_keys_name_our_vad_and_punctuation_only_for_the_same_pipeline() -> None:
    assert peer_keys(MODELS, "same", 1) == {
        "ncpu": 1,
        "vad_model": "/m/vad: odd",
        "punc_model": "/m/punc",
    }
    assert peer_keys(MODELS, "same", 0) == {"vad_model": "/m/vad: odd", "punc_model": "/m/punc"}
    assert peer_keys(MODELS, "asr-only", 1) == {"ncpu": 1}
    assert peer_keys(MODELS, "asr-only", 0) == {}


def test_peer_server_runs_the_model_dir_as_it_is_only_as_shipped(tmp_path: Path) -> None:
    asr = tmp_path / "asr"
    asr.mkdir()
    (asr / "config.yaml").write_text("model: SeacoParaformer\n")
    models = {**MODELS, "asr": str(asr)}
    assert PeerServer(models, tmp_path / "a", 0, "asr-only").model_dir == asr
    same = PeerServer(models, tmp_path / "b", 0, "same").model_dir
    assert same == tmp_path / "b" / "asr-model"
    assert yaml.safe_load((same / "config.yaml").read_text())["punc_model"] == "/m/punc"


def test_overlay_links_the_same_files_and_changes_only_the_config(tmp_path: Path) -> None:
    src = tmp_path / "asr"
    src.mkdir()
    (src / "model.pt").write_bytes(b"weights")
    (src / "configuration.json").write_text("{}")
    (src / "config.yaml").write_text("model: SeacoParaformer\n")
    (tmp_path / "peer" / "asr-model").mkdir(parents=True)
    (tmp_path / "peer" / "asr-model" / "stale").write_text("from a previous run")

    out = overlay(src, tmp_path / "peer" / "asr-model", {"ncpu": 1})

    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "configuration.json",
        "model.pt",
    ]
    assert (out / "model.pt").is_symlink() and (out / "model.pt").resolve() == src / "model.pt"
    assert not (out / "config.yaml").is_symlink()
    assert (out / "config.yaml").read_text() == "model: SeacoParaformer\nncpu: 1\n"
    assert (src / "config.yaml").read_text() == "model: SeacoParaformer\n"  # untouched


@pytest.mark.parametrize("pipeline", ["same", "asr-only"])
def test_automodel_from_the_overlay_builds_our_pipeline(
    model_dirs: ModelDirs, tmp_path: Path, pipeline: PeerPipeline
) -> None:
    """What funasr-server does with --model-path: AutoModel(model=path), nothing else passed.
    The overlay alone must give it our VAD and punctuation (and one thread), or none of them."""
    import funasr
    import torch

    models = {"asr": str(model_dirs.asr), "vad": str(model_dirs.vad), "punc": str(model_dirs.punc)}
    keys = peer_keys(models, pipeline, 1)
    path = overlay(model_dirs.asr, tmp_path / "asr-model", keys)
    threads = torch.get_num_threads()
    try:
        model = funasr.AutoModel(model=str(path), device="cpu", disable_update=True)
        assert torch.get_num_threads() == 1  # ncpu from config.yaml, not FunASR's 4
    finally:
        torch.set_num_threads(threads)

    same = pipeline == "same"
    assert (model.vad_model is not None) == same
    assert (model.punc_model is not None) == same
    if same:
        assert model.vad_kwargs["model_path"] == str(model_dirs.vad)
        assert model.punc_kwargs["model_path"] == str(model_dirs.punc)


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


def _side(name: str, wall: float, cpu: float) -> PeerSide:
    stats = Stats.of([0.5, 1.0], 1000)
    return PeerSide(
        name=name,
        clips=6,
        done=6,
        errors=0,
        error_samples=[],
        warmup_s=1.0,
        wall_s_all_done=wall,
        transcript_ms=stats,
        health_ms=stats,
        health_errors=0,
        rss_mb={name: 100.0},
        rss_mb_total=100.0,
        cpu_s=cpu,
        text_sample="x",
    )


def _report(figure: PeerFigure) -> tuple[str, dict[str, str]]:
    """Section 1c of PERFORMANCE.md and the 1d target row, for a run with only the peer figure."""
    machine = {"cpus": 2, "cpu_model": "cpu", "memory_gb": 4, "kernel": "k"}
    git = {"commit": "0" * 40, "branch": "b", "dirty": False}
    run = RunInfo(
        date="2026-01-01",
        host="h",
        machine=machine | {"loadavg_at_start": [0, 0, 0], "loadavg_at_end": [0, 0, 0]},
        versions={"funasr": "1.4.16"},
        git=git,
        mode="smoke",
        command="c",
        figures=["peer"],
        config=Config(mode="smoke").model_dump(),
    )
    result = Result(run=run, figures=Figures(peer=figure))
    text = report.render(result)
    section = text[text.index("## 1c.") :]
    row = next(t for t in report.targets(result) if t.name.startswith("1d."))
    return section, row.model_dump()


def _figure(pipeline: PeerPipeline, asr_only: bool) -> PeerFigure:
    ours, peer = _side("ours", 4.0, 10.0), _side("funasr-server", 8.0, 12.0)
    beside = _side("funasr-server, ASR only", 6.0, 8.0) if asr_only else None
    return PeerFigure(
        clips=6,
        lengths_s={"min": 5, "max": 10, "sum": 45, "seed": 5},
        workers=2,
        threads_per_process=1,
        peer_threads=1,
        health_interval_ms=75.0,
        peer_pipeline=pipeline,
        ours=ours,
        peer=peer,
        ratio_all_done=ratio(8.0, 4.0),
        peer_asr_only=beside,
        ratio_all_done_asr_only=ratio(6.0, 4.0) if beside else None,
        notes=[],
    )


def test_report_judges_the_same_pipeline_peer_and_shows_the_asr_only_one_beside() -> None:
    section, row = _report(_figure("same", asr_only=True))

    assert "| | this service | funasr-server, same pipeline | funasr-server as it ships" in section
    assert "| all 6 transcribed (s) | 4.0 | 8.0 | 6.0 |" in section
    assert "**2.0** (same pipeline); funasr-server as it ships, ASR only: 1.5." in section
    assert "same pipeline (VAD + ASR + punctuation)" in row["name"]
    assert row["measured"].startswith("2.0x (8.0 s vs 4.0 s);")
    assert "(ASR only): 1.5x (6.0 s)" in row["measured"]
    assert row["verdict"] == "MISS" and row["gap"] == "-1.00x"
    assert "no VAD" not in row["why"] and "both run FSMN-VAD" in row["why"]


def test_report_says_when_the_judged_peer_ran_asr_only() -> None:
    section, row = _report(_figure("asr-only", asr_only=False))

    assert "| | this service | funasr-server, ASR only |" in section
    assert "funasr-server as it ships (ASR only) |" not in section  # no column beside
    assert "**2.0** (the peer ASR only)." in section
    assert "the peer ASR only" in row["name"] and "no VAD" in row["why"]
