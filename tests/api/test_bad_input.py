"""The bad-input corpus: every way a client can get a request wrong, one row per case.

Each row goes through the real ASGI app and a real Redis and must get the right 4xx, a JSON body
with an `error` that says what is wrong (no traceback, no server path, no Redis detail), and leave
nothing behind: no recording (nor a `.part` file), no task, no RQ job, no index entry.

Elsewhere: the size cap on a real uvicorn server fed a chunked body that never ends,
tests/api/test_middleware.py; client file names, which are accepted but never reach the disk,
tests/api/test_file_names.py; slow clients against a real server, tests/system/test_slow_clients.py.

`report/RELIABILITY.md` cites these rows. The retry of a task a real worker finished is
`tests/system/test_service_e2e.py::test_retry_of_a_done_task_is_409`; here the record is set to
done by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job

from src.api.main import create_app
from src.asr.hotwords import MAX_HOTWORDS
from src.config import Settings
from src.records import task_store
from src.records.task_store import TASK_ID_PATTERN, TaskStatus, utcnow
from src.service.submit import FULL_CHECK_MAX_BYTES
from tests.support.audio_samples import (
    BAD_INPUTS,
    SPEECH_WAV,
    make_bad_input,
    make_long,
    make_mp3_without_xing,
)
from tests.support.fixtures import make_settings
from tests.support.processes import ROOT, RedisServer
from tests.support.uploads import (
    BOUNDARY,
    SUBMIT,
    UNKNOWN_ID,
    assert_nothing_stored,
    multipart,
)

TASK_ROUTES = [
    ("GET", "/api/v1/asr/result/{}"),
    ("GET", "/api/v1/asr/audio/{}"),
    ("POST", "/api/v1/asr/retry/{}"),
    ("DELETE", "/api/v1/asr/task/{}"),
]
SUPPORTED = {"wav", "mp3", "m4a", "flac", "ogg"}


# --- what every row asserts ----------------------------------------------------------------


def deleted_without_trace(conn: redis.Redis, settings: Settings) -> None:
    """After a delete only counters remain: `submitted` still counts the upload, RQ still knows
    the queue's name."""
    assert_nothing_stored(conn, settings, allowed=("asr:seq:", "asr:stats", "rq:queues"))


def assert_clean_error(resp: httpx.Response, settings: Settings, redis_port: int) -> dict:
    """JSON with a non-empty `error`; nothing about the server's insides in it."""
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"].strip(), body
    # The client's own task id may be echoed back (capped); judge the rest.
    echoed = body.get("task_id")
    if isinstance(echoed, str):
        assert len(echoed) <= 100
    text = json.dumps({k: v for k, v in body.items() if k != "task_id"})
    for leak in (
        "Traceback",
        'File "',
        "site-packages",
        str(ROOT),
        str(settings.storage_path),
        "redis://",
        f":{redis_port}",
        "Redis",
        "rq:",
        "asr:",
        "<class",
        "Exception",
    ):
        assert leak not in text, (leak, body)
    assert len(resp.content) < 2000, resp.text
    return body


# --- the rows ------------------------------------------------------------------------------


@dataclass
class Ctx:
    client: TestClient
    conn: redis.Redis
    tmp: Path
    monkeypatch: pytest.MonkeyPatch


Check = Callable[[dict, httpx.Response], None]
StateCheck = Callable[[redis.Redis, Settings], None]


@dataclass(frozen=True)
class Case:
    id: str
    send: Callable[[Ctx], httpx.Response]
    status: int
    error: str  # the exact `error`
    check: Check | None = None  # more about the body or headers
    settings: dict[str, Any] = field(default_factory=dict)
    state: StateCheck = assert_nothing_stored


def upload(ctx: Ctx, data: bytes, name: str = "voice.wav", **form: str) -> httpx.Response:
    return ctx.client.post(SUBMIT, files={"audio": (name, data)}, data=form)


BAD_KINDS_USED: set[str] = set()


def upload_bad(kind: str) -> Callable[[Ctx], httpx.Response]:
    BAD_KINDS_USED.add(kind)

    def send(ctx: Ctx) -> httpx.Response:
        path = make_bad_input(kind, SPEECH_WAV, ctx.tmp)
        return upload(ctx, path.read_bytes(), path.name)

    return send


def with_form(**form: str) -> Callable[[Ctx], httpx.Response]:
    return lambda ctx: upload(ctx, SPEECH_WAV.read_bytes(), **form)


def post_raw(ctx: Ctx, body: bytes, content_type: str) -> httpx.Response:
    return ctx.client.post(SUBMIT, content=body, headers={"content-type": content_type})


def bad_audio(reason: str) -> Check:
    def check(body: dict, _: httpx.Response) -> None:
        assert body["reason"] == reason
        assert isinstance(body["detail"], str) and body["detail"]
        assert set(body["supported_formats"]) >= SUPPORTED

    return check


def invalid_field(name: str, says: str) -> Check:
    def check(body: dict, _: httpx.Response) -> None:
        assert [d for d in body["details"] if d["field"] == name and says in d["message"]], body

    return check


def body_has(**expected: object) -> Check:
    def check(body: dict, _: httpx.Response) -> None:
        assert {k: body.get(k) for k in expected} == expected, body

    return check


def allows(methods: str) -> Check:
    def check(_: dict, resp: httpx.Response) -> None:
        assert resp.headers["allow"] == methods

    return check


def too_large(body: dict, _: httpx.Response) -> None:
    assert body["max_bytes"] > 0


def over_duration_limit(ctx: Ctx) -> httpx.Response:
    """60 s of FLAC against a 10 s limit, with the full decoder booby-trapped: the declared
    duration alone must reject it, before a single frame is decoded."""
    path = make_long(SPEECH_WAV, ctx.tmp, seconds=60)
    calls: list[str] = []
    ctx.monkeypatch.setattr("src.media.audio._decode", lambda *a, **k: calls.append("_decode"))
    resp = upload(ctx, path.read_bytes(), path.name)
    assert calls == [], "the audio was decoded before the duration check"
    return resp


def streamed(ctx: Ctx, total: int) -> httpx.Response:
    """A multipart body from a generator: no Content-Length, only the bytes as they come."""

    def body() -> Iterator[bytes]:
        yield multipart(b"big.wav", b"")[: -len(f"\r\n--{BOUNDARY}--\r\n")]
        for _ in range(total // 65536):
            yield b"\0" * 65536
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return ctx.client.post(
        SUBMIT,
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )


def submit_ok(ctx: Ctx) -> str:
    resp = upload(ctx, SPEECH_WAV.read_bytes())
    assert resp.status_code == 200, resp.text
    return resp.json()["task_id"]


def delete_twice(ctx: Ctx) -> httpx.Response:
    task_id = submit_ok(ctx)
    assert ctx.client.delete(f"/api/v1/asr/task/{task_id}").status_code == 200
    return ctx.client.delete(f"/api/v1/asr/task/{task_id}")


def retry_done(ctx: Ctx) -> httpx.Response:
    """A task a worker finished: its job gone from the queue, its record done."""
    task_id = submit_ok(ctx)
    Job.fetch(task_id, connection=ctx.conn).delete()
    done = task_store.update(
        ctx.conn,
        task_id,
        status=TaskStatus.DONE,
        progress=100,
        stage="done",
        text="好",
        finished_at=utcnow(),
    )
    assert done is not None
    return ctx.client.post(f"/api/v1/asr/retry/{task_id}")


def retry_queued(ctx: Ctx) -> httpx.Response:
    return ctx.client.post(f"/api/v1/asr/retry/{submit_ok(ctx)}")


def only_the_task_remains(status: TaskStatus, jobs: int) -> StateCheck:
    """The rejected retry changed nothing: the record keeps its state, no job was added."""

    def check(conn: redis.Redis, settings: Settings) -> None:
        keys = list(conn.scan_iter("asr:task:*"))
        assert len(keys) == 1
        record = task_store.load(conn, keys[0].decode().removeprefix("asr:task:"))
        assert record is not None and record.status == status and record.attempts == 0
        assert Queue(settings.rq_queue_name, connection=conn).count == jobs

    return check


def status_is(expected: str) -> Check:
    def check(body: dict, _: httpx.Response) -> None:
        assert body["status"] == expected and body["task_id"]

    return check


def two_parts(name: bytes) -> Callable[[Ctx], httpx.Response]:
    """The same field twice in one form: a server that kept only the last would hide it."""

    def send(ctx: Ctx) -> httpx.Response:
        wav = SPEECH_WAV.read_bytes()
        first = multipart(b"a.wav", wav)[: -len(f"--{BOUNDARY}--\r\n")]
        if name == b"audio":
            second = multipart(b"b.wav", wav)
        else:
            second = (
                f"--{BOUNDARY}\r\n".encode()
                + b'Content-Disposition: form-data; name="'
                + name
                + b'"\r\n\r\nzh\r\n'
                + f"--{BOUNDARY}\r\n".encode()
                + b'Content-Disposition: form-data; name="'
                + name
                + b'"\r\n\r\nen\r\n'
                + f"--{BOUNDARY}--\r\n".encode()
            )
        return post_raw(ctx, first + second, f"multipart/form-data; boundary={BOUNDARY}")

    return send


def download_range(value: str) -> Callable[[Ctx], httpx.Response]:
    """A stored recording fetched with the given Range header."""

    def send(ctx: Ctx) -> httpx.Response:
        task_id = submit_ok(ctx)
        return ctx.client.get(f"/api/v1/asr/audio/{task_id}", headers={"Range": value})

    return send


def unsatisfiable(body: dict, resp: httpx.Response) -> None:
    size = SPEECH_WAV.stat().st_size
    assert resp.headers["content-range"] == f"bytes */{size}"
    assert body["size"] == size


def route_cases() -> list[Case]:
    """Every {task_id} route with ids that are paths, globs, huge or simply unknown."""
    ids: list[tuple[str, str, int, str | None]] = [
        # (row, as sent in the URL, status, error; None: per route)
        ("dotdot", "..%2Fx", 404, "Not Found"),  # decoded to ../x: no route matches
        ("star", "*", 422, "Invalid task id"),
        ("question_mark", "%3F", 422, "Invalid task id"),
        ("redis_glob", "asr:task:*", 422, "Invalid task id"),
        ("nul", "%00", 422, "Invalid task id"),
        ("crlf", "x%0D%0AX-Injected:%201", 422, "Invalid task id"),
        ("10KB", "A" * 10_240, 422, "Invalid task id"),
        # `\d` and `$` let these through to a 404 lookup: ASCII digits only, nothing after.
        ("trailing_newline", UNKNOWN_ID + "%0A", 422, "Invalid task id"),
        ("arabic_indic_digits", quote("٢٠٢٥") + UNKNOWN_ID[4:], 422, "Invalid task id"),
        (
            "fullwidth_digits",
            UNKNOWN_ID[:11] + quote("００１") + UNKNOWN_ID[14:],
            422,
            "Invalid task id",
        ),
        ("unknown", UNKNOWN_ID, 404, None),
    ]
    cases = []
    for method, template in TASK_ROUTES:
        route = template.split("/")[-2]
        for row, task_id, status, error in ids:
            if error is None:
                error = "Recording not found" if route == "audio" else "Task not found"

            def send(ctx: Ctx, method: str = method, url: str = template.format(task_id)):
                return ctx.client.request(method, url)

            cases.append(Case(f"{method}_{route}_{row}", send, status, error))
    return cases


CASES: list[Case] = [
    # What is uploaded: judged by content, whatever the name says.
    Case("empty_file", upload_bad("empty"), 400, "Invalid file format", bad_audio("empty")),
    Case("one_byte", upload_bad("one_byte"), 400, "Invalid file format", bad_audio("not_audio")),
    Case(
        "text_named_wav",
        upload_bad("text_as_wav"),
        400,
        "Invalid file format",
        bad_audio("not_audio"),
    ),
    Case(
        "png_named_mp3",
        upload_bad("png_as_mp3"),
        400,
        "Invalid file format",
        bad_audio("not_audio"),
    ),
    Case(
        "truncated_mp3",
        upload_bad("truncated_mp3"),
        400,
        "Invalid file format",
        bad_audio("corrupt"),
    ),
    Case(
        "truncated_ogg_header",
        upload_bad("ogg_header_cut"),
        400,
        "Invalid file format",
        bad_audio("corrupt"),
    ),
    Case(
        "truncated_wav_header",
        upload_bad("wav_header_cut"),
        400,
        "Invalid file format",
        bad_audio("corrupt"),
    ),
    Case(
        "m4a_without_moov",
        upload_bad("m4a_header_cut"),
        400,
        "Invalid file format",
        bad_audio("corrupt"),
    ),
    Case(
        "mp3_garbage_middle",
        upload_bad("mp3_garbage_middle"),
        400,
        "Invalid file format",
        bad_audio("corrupt"),
    ),
    Case(
        "video_only_mp4",
        upload_bad("video_only_mp4"),
        400,
        "Invalid file format",
        bad_audio("no_audio_stream"),
    ),
    Case(
        "wav_no_samples",
        upload_bad("wav_no_samples"),
        400,
        "Invalid file format",
        bad_audio("empty"),
    ),
    Case(
        "over_duration_limit",
        over_duration_limit,
        413,
        "Audio is 1m00s long; the limit is 10.0s",
        body_has(reason="too_long"),
        settings={"asr_max_audio_seconds": 10},
    ),
    Case(
        "over_size_cap_declared",
        lambda ctx: upload(ctx, SPEECH_WAV.read_bytes()),  # 211 KB, Content-Length declared
        413,
        "File too large",
        too_large,
        settings={"max_upload_bytes": 50_000},
    ),
    Case(
        "over_size_cap_streamed",
        lambda ctx: streamed(ctx, 1024 * 1024),  # chunked, no Content-Length
        413,
        "File too large",
        too_large,
        settings={"max_upload_bytes": 50_000},
    ),
    # The form's fields.
    Case(
        "missing_audio_field",
        lambda ctx: ctx.client.post(SUBMIT, data={"language": "zh"}),
        422,
        "Invalid request",
        invalid_field("body.audio", "Field required"),
    ),
    Case(
        "audio_as_text_field",
        lambda ctx: ctx.client.post(SUBMIT, data={"audio": "not a file"}),
        422,
        "Invalid request",
        invalid_field("body.audio", "Expected a file"),
    ),
    Case(
        "unknown_language",
        with_form(language="klingon"),
        422,
        "Unsupported language",
        body_has(supported_languages=["zh", "en", "auto"]),
    ),
    Case(
        "batch_size_zero",
        with_form(batch_size="0"),
        422,
        "Invalid request",
        invalid_field("body.batch_size", "greater than or equal to 1"),
    ),
    Case(
        "batch_size_negative",
        with_form(batch_size="-5"),
        422,
        "Invalid request",
        invalid_field("body.batch_size", "greater than or equal to 1"),
    ),
    Case(
        "batch_size_huge",
        with_form(batch_size=str(10**12)),
        422,
        "Invalid request",
        invalid_field("body.batch_size", "less than or equal to 3600"),
    ),
    Case(
        "batch_size_not_a_number",
        with_form(batch_size="many"),
        422,
        "Invalid request",
        invalid_field("body.batch_size", "valid integer"),
    ),
    Case(
        "batch_size_fraction",
        with_form(batch_size="1.5"),
        422,
        "Invalid request",
        invalid_field("body.batch_size", "valid integer"),
    ),
    Case(
        "hotword_url",
        with_form(hotwords="http://example.invalid/x.txt"),
        422,
        "Invalid hotwords",
        body_has(invalid=["http://example.invalid/x.txt"]),
    ),
    Case(
        "two_audio_parts",
        two_parts(b"audio"),
        422,
        "Invalid request",
        invalid_field("body.audio", "sent 2 times"),
    ),
    Case(
        "two_language_fields",
        two_parts(b"language"),
        422,
        "Invalid request",
        invalid_field("body.language", "sent 2 times"),
    ),
    Case(
        "too_many_hotwords",
        with_form(hotwords=" ".join(f"词{i}" for i in range(MAX_HOTWORDS + 1))),
        422,
        "Too many hotwords",
        body_has(max_hotwords=MAX_HOTWORDS, count=MAX_HOTWORDS + 1),
    ),
    Case(
        "history_limit_zero",
        lambda ctx: ctx.client.get("/api/v1/asr/history?limit=0"),
        422,
        "Invalid request",
        invalid_field("query.limit", "greater than or equal to 1"),
    ),
    Case(
        "history_limit_not_a_number",
        lambda ctx: ctx.client.get("/api/v1/asr/history?limit=ten"),
        422,
        "Invalid request",
        invalid_field("query.limit", "valid integer"),
    ),
    # How it is sent.
    Case(
        "json_body",
        lambda ctx: ctx.client.post(SUBMIT, json={"audio": "UklGRg==", "language": "zh"}),
        422,
        "Invalid request",
        invalid_field("body.audio", "Field required"),
    ),
    Case(
        "urlencoded_body",
        lambda ctx: post_raw(ctx, b"audio=UklGRg%3D%3D", "application/x-www-form-urlencoded"),
        422,
        "Invalid request",
        invalid_field("body.audio", "Expected a file"),
    ),
    Case(
        "raw_audio_body",
        lambda ctx: post_raw(ctx, SPEECH_WAV.read_bytes(), "audio/wav"),
        422,
        "Invalid request",
        invalid_field("body.audio", "Field required"),
    ),
    Case(
        "multipart_without_boundary",
        lambda ctx: post_raw(ctx, multipart(b"a.wav", b"x"), "multipart/form-data"),
        400,
        "Missing boundary in multipart.",
    ),
    Case(
        "multipart_garbage",
        lambda ctx: post_raw(ctx, b"\x00garbage", f"multipart/form-data; boundary={BOUNDARY}"),
        400,
        "Invalid multipart data.",
    ),
    Case(
        "filename_over_header_limit",  # python-multipart caps a part header line at 4224 bytes
        lambda ctx: post_raw(
            ctx,
            multipart(b"x" * 5000 + b".wav", SPEECH_WAV.read_bytes()),
            f"multipart/form-data; boundary={BOUNDARY}",
        ),
        400,
        "Invalid multipart data.",
    ),
    Case(
        "get_on_submit",
        lambda ctx: ctx.client.get(SUBMIT),
        405,
        "Method Not Allowed",
        allows("POST"),
    ),
    Case(
        "put_on_submit",
        lambda ctx: ctx.client.put(SUBMIT, content=b"x"),
        405,
        "Method Not Allowed",
        allows("POST"),
    ),
    Case(
        "post_on_result",
        lambda ctx: ctx.client.post(f"/api/v1/asr/result/{UNKNOWN_ID}"),
        405,
        "Method Not Allowed",
        allows("GET"),
    ),
    Case(
        "get_on_retry",
        lambda ctx: ctx.client.get(f"/api/v1/asr/retry/{UNKNOWN_ID}"),
        405,
        "Method Not Allowed",
        allows("POST"),
    ),
    Case(
        "delete_on_health",
        lambda ctx: ctx.client.delete("/api/v1/health"),
        405,
        "Method Not Allowed",
        allows("GET"),
    ),
    # Task life cycle.
    Case("delete_twice", delete_twice, 404, "Task not found", state=deleted_without_trace),
    Case(
        "retry_of_done_task",
        retry_done,
        409,
        "Only a failed task can be retried",
        status_is("done"),
        state=only_the_task_remains(TaskStatus.DONE, jobs=0),
    ),
    Case(
        "retry_of_queued_task",
        retry_queued,
        409,
        "Only a failed task can be retried",
        status_is("queued"),
        state=only_the_task_remains(TaskStatus.QUEUED, jobs=1),
    ),
    # A stored recording asked for with a Range it cannot serve.
    *(
        Case(
            f"range_{row}",
            download_range(value),
            400,
            "Invalid Range header",
            body_has(detail=detail),
            state=only_the_task_remains(TaskStatus.QUEUED, jobs=1),
        )
        for row, value, detail in [
            ("without_equals", "bytes", "Malformed range header."),
            ("not_numbers", "bytes=a-b", "Range header: range must be requested"),
            ("start_after_end", "bytes=500-100", "Range header: start must be less than end"),
        ]
    ),
    Case(
        "range_past_the_end",
        download_range("bytes=99999999-"),
        416,
        "Range not satisfiable",
        unsatisfiable,
        state=only_the_task_remains(TaskStatus.QUEUED, jobs=1),
    ),
    *route_cases(),
]


def test_the_corpus_covers_the_list():
    ids = {c.id for c in CASES}
    assert len(ids) == len(CASES), "duplicate row ids"
    assert len(CASES) >= 30
    assert set(BAD_INPUTS) == BAD_KINDS_USED  # every broken-file kind the samples module makes


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case,
    redis_server: RedisServer,
    storage: Path,
    conn: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    settings = make_settings(redis_server.port, storage, **case.settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        resp = case.send(Ctx(client, conn, tmp_path, monkeypatch))
    assert resp.status_code == case.status, resp.text
    body = assert_clean_error(resp, settings, redis_server.port)
    assert body["error"] == case.error, body
    if case.check is not None:
        case.check(body, resp)
    case.state(conn, settings)


# --- what the schema publishes and what is still accepted ---------------------------------


def test_the_task_id_pattern_is_published_and_is_the_check(client: TestClient):
    """Every {task_id} route's parameter carries the pattern a client can check ids against,
    and it accepts exactly what the API accepts (ECMA regex: `$` is the end of the text)."""
    spec = client.get("/openapi.json").json()
    for method, template in TASK_ROUTES:
        operation = spec["paths"][template.format("{task_id}")][method.lower()]
        (param,) = [p for p in operation["parameters"] if p["name"] == "task_id"]
        assert param["schema"]["pattern"] == TASK_ID_PATTERN, (method, template)
    schema = re.compile(TASK_ID_PATTERN, re.ASCII)
    for task_id in (UNKNOWN_ID, "2025-12-01_123456_" + "a" * 24):
        assert schema.fullmatch(task_id) and task_store.is_valid_task_id(task_id)
    for task_id in (UNKNOWN_ID + "\n", "٢٠٢٥" + UNKNOWN_ID[4:], UNKNOWN_ID[:15] + "A" * 24, "x"):
        assert not task_store.is_valid_task_id(task_id), task_id
        assert not schema.fullmatch(task_id), task_id


def test_hotwords_up_to_the_limit_are_all_kept(client: TestClient, conn: redis.Redis):
    """MAX_HOTWORDS distinct words (repeats do not count) go through whole, in order."""
    words = [f"词{i}" for i in range(MAX_HOTWORDS)]
    resp = client.post(
        SUBMIT,
        files={"audio": ("a.wav", SPEECH_WAV.read_bytes())},
        data={"hotwords": " ".join(words + words[:50])},
    )
    assert resp.status_code == 200, resp.text
    record = task_store.load(conn, resp.json()["task_id"])
    assert record is not None and record.hotwords == words


def test_valid_ranges_still_work(client: TestClient):
    """The Range check only turns errors into JSON: good ranges get 206, and a unit other than
    bytes is ignored (RFC 9110 section 14.2), not refused."""
    wav = SPEECH_WAV.read_bytes()
    resp = client.post(SUBMIT, files={"audio": ("a.wav", wav)})
    url = f"/api/v1/asr/audio/{resp.json()['task_id']}"
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == wav[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(wav)}"
    tail = client.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == wav[-5:]
    other_unit = client.get(url, headers={"Range": "items=0-1"})
    assert other_unit.status_code == 200 and other_unit.content == wav


def test_over_long_mp3_over_4mb_without_a_xing_header_is_413(
    redis_server: RedisServer, storage: Path, conn: redis.Redis, tmp_path: Path
):
    """Over FULL_CHECK_MAX_BYTES the upload is only probed, and an MP3 with no Xing/Info header
    declares no length: it got a 200 and failed in the worker. Its packets are measured now."""
    path = make_mp3_without_xing(SPEECH_WAV, tmp_path / "long.mp3", seconds=540, bit_rate=64000)
    assert path.stat().st_size > FULL_CHECK_MAX_BYTES
    settings = make_settings(redis_server.port, storage, asr_max_audio_seconds=300)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        resp = client.post(SUBMIT, files={"audio": (path.name, path.read_bytes())})
    assert resp.status_code == 413, resp.text
    body = assert_clean_error(resp, settings, redis_server.port)
    assert body["error"] == "Audio is longer than the limit of 5m00s", body
    assert body["reason"] == "too_long", body
    assert_nothing_stored(conn, settings)
