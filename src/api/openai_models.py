"""OpenAI's wire format for transcriptions, models and errors, as the `openai` SDK reads it
(`openai/types/audio/transcription*.py`, `openai/types/model.py`, `openai/_exceptions.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from src.records.task_store import TaskRecord
from src.results.subtitles import Cue

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Granularity = Literal["segment", "word"]


class OpenAIErrorObject(BaseModel):
    """OpenAI's error object. Errors that concern a task also carry `task_id` and `result_url`."""

    model_config = ConfigDict(extra="allow")

    message: str = Field(description="human-readable description of the problem")
    type: str = Field(description="`invalid_request_error` (4xx) or `server_error` (5xx)")
    param: str | None = Field(None, description="the request field at fault, if one is")
    code: str | None = Field(None, description="a machine-readable reason, e.g. `model_not_found`")


class OpenAIErrorResponse(BaseModel):
    """Every error of the /v1 routes: `{"error": {"message", "type", "param", "code"}}`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "message": "The model `gpt-9` does not exist; GET /v1/models lists them",
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                }
            ]
        }
    )

    error: OpenAIErrorObject


class DurationUsage(BaseModel):
    """Usage billed by audio length, the variant OpenAI reports for whisper-1."""

    type: Literal["duration"] = "duration"
    seconds: float


class OpenAITranscription(BaseModel):
    """`response_format=json`."""

    text: str
    usage: DurationUsage

    @classmethod
    def of(cls, record: TaskRecord) -> OpenAITranscription:
        return cls(text=record.text or "", usage=DurationUsage(seconds=record.duration or 0.0))


class OpenAISegment(BaseModel):
    """One sentence, with Whisper's per-segment fields. FunASR has no measures for the decoder
    statistics: they hold neutral values that none of OpenAI's documented thresholds flags
    (avg_logprob < -1, compression_ratio > 2.4, no_speech_prob > 1)."""

    id: int
    seek: int = 0
    start: float = Field(description="seconds from the start of the audio")
    end: float = Field(description="seconds from the start of the audio")
    text: str
    tokens: list[int] = []
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0
    no_speech_prob: float = 0.0


class OpenAIVerboseTranscription(BaseModel):
    """`response_format=verbose_json`: segments from the sentence timestamps."""

    task: Literal["transcribe"] = "transcribe"
    language: str = Field(description="the language the request named (or the default, zh)")
    duration: float = Field(description="seconds of audio")
    text: str
    segments: list[OpenAISegment]
    usage: DurationUsage

    @classmethod
    def of(cls, record: TaskRecord, cues: list[Cue]) -> OpenAIVerboseTranscription:
        duration = record.duration or 0.0
        segments = [
            OpenAISegment(id=i, start=c.start_ms / 1000, end=c.end_ms / 1000, text=c.text)
            for i, c in enumerate(cues)
        ]
        return cls(
            language=record.language,
            duration=duration,
            text=record.text or "",
            segments=segments,
            usage=DurationUsage(seconds=duration),
        )


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(0, description="unknown for a local model: 0")
    owned_by: str = "asr-service"


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]
