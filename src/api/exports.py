"""A done task's transcript as an HTTP answer: text, SubRip or WebVTT, in UTF-8.

SubRip has no registered media type; `application/x-subrip` is the one freedesktop.org's
shared-mime-info (what Linux desktops and players consult) gives `.srt`. WebVTT's `text/vtt` is
registered with IANA. Both faces answer with these: the native export and the OpenAI
`response_format`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Response

from src.records.task_store import TaskRecord
from src.service import transcripts
from src.service.transcripts import TextFormat

ExportFormat = Literal["json", "txt", "srt", "vtt"]

MEDIA_TYPES: dict[TextFormat, str] = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}

# The OpenAPI `content` of a 200 that may be one of the files.
FILE_CONTENT: dict[str, Any] = {
    media.split(";")[0]: {"schema": {"type": "string"}} for media in MEDIA_TYPES.values()
}


def transcript_file(record: TaskRecord, fmt: TextFormat, *, attach_name: bool = False) -> Response:
    """The transcript in `fmt`; `attach_name` names the file `<task_id>.<fmt>` for a download."""
    headers = {"Content-Disposition": f'inline; filename="{record.task_id}.{fmt}"'}
    return Response(
        transcripts.export(record, fmt),
        media_type=MEDIA_TYPES[fmt],
        headers=headers if attach_name else None,
    )
