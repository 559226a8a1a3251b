"""Client file names: accepted, echoed sanitised, and never used on the disk.

Each name goes out byte for byte in a hand-made multipart body (no client-side escaping); the
stored recording is named after the task id alone, and the download's Content-Disposition
carries no header injection.
"""

from __future__ import annotations

import unicodedata

import pytest
import redis
from fastapi.testclient import TestClient

from src.config import Settings
from tests.support.audio_samples import SPEECH_WAV
from tests.support.uploads import BOUNDARY, SUBMIT, multipart

FILENAMES: dict[str, tuple[bytes, str]] = {
    # row: (the name as the client sends it, what the API echoes back)
    "dotdot_unix": (b"../../etc/passwd", "passwd"),
    "dotdot_windows": (b"..\\..\\Windows\\win.ini", "win.ini"),
    "absolute": (b"/var/lib/redis/dump.rdb", "dump.rdb"),
    "only_dotdot": (b"..", "upload"),
    "dotdot_behind_nul": (b"voice/\x00..", "upload"),
    "nul": (b"voice\x00.wav", "voice.wav"),
    # A raw CR LF ends the part's header line: the name is cut there, the rest is a header.
    "crlf_raw": (b"a\r\nX-Injected: 1.wav", '"a'),
    "empty": (b"", "upload"),
    "long_ascii_1000": (b"n" * 996 + b".wav", "n" * 255),
    "long_cjk_1000": (("长" * 1000).encode(), "长" * 255),
    "rtl_override": ("\u202egpj.wav".encode(), "gpj.wav"),
    "zero_width_and_bom": ("\u200b\ufeffvoice\u200d.wav".encode(), "voice.wav"),
    "emoji_and_combining": ("😀 e\u0301.ogg".encode(), "😀 e\u0301.ogg"),
    "invalid_utf8": (b"\xff\xfe.wav", "\xff\xfe.wav"),  # read as latin-1
}


@pytest.mark.parametrize("row", sorted(FILENAMES))
def test_client_file_names_never_reach_the_disk(
    row: str, client: TestClient, conn: redis.Redis, settings: Settings
):
    sent, echoed = FILENAMES[row]
    resp = client.post(
        SUBMIT,
        content=multipart(sent, SPEECH_WAV.read_bytes()),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert resp.status_code == 200, resp.text
    task_id = resp.json()["task_id"]

    # The stored name is the server's own; nothing else was written anywhere under storage.
    assert sorted(p.name for p in settings.recordings_dir.iterdir()) == [f"{task_id}.wav"]
    written = {
        p.relative_to(settings.storage_path).as_posix()
        for p in settings.storage_path.rglob("*")
        if p.is_file() and p.parent != settings.logs_dir
    }
    assert written == {f"recordings/{task_id}.wav"}

    name = client.get(f"/api/v1/asr/result/{task_id}").json()["filename"]
    assert name == echoed
    assert len(name) <= 255 and "/" not in name and "\\" not in name
    assert name.strip(". ") and not any(unicodedata.category(c)[0] == "C" for c in name)

    download = client.get(f"/api/v1/asr/audio/{task_id}")
    assert download.status_code == 200
    assert download.content == SPEECH_WAV.read_bytes()
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment; filename")
    assert "\r" not in disposition and "\n" not in disposition and "/" not in disposition
    assert "x-injected" not in {k.lower() for k in download.headers}
