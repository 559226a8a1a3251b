"""Never transcribe the same thing twice: when two uploads are "the same", and idempotency keys.

A Telegram bot sends the same voice note again when Telegram re-delivers an update or a user
forwards it, and resends a request whose answer it missed. Two mechanisms answer those:

- The result cache (src/results/cache.py) keys on `fingerprint`: SHA-256 over the upload's bytes
  (hashed while it is saved), its language, the hotwords the engine will apply and the models.
  The hotwords are the configured file's and the request's, cleaned as the recognizer cleans
  them and sorted, so a reordered list or a word the file already has is the same request, and
  an edited hotwords file is not. The models are the engine and its ASR, VAD and punctuation
  models as configured (the names /health's workers report). The file name is left out (it
  changes nothing heard), and so is `batch_size`: it only sets how much audio one model batch
  takes.
- An `Idempotency-Key` names one request. Its claim, `asr:idempotency:{scope}:{sha256(key)}`,
  holds the task the first request created and that request's fingerprint (`request_fingerprint`:
  the cache's fingerprint plus batch_size and callback_url, every option the client sent). A
  resend with the same key gets that task; the same key with another upload or options, or
  another callback_url, is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import redis

from src.asr.hotwords import clean_hotwords, read_hotwords_file
from src.config import Settings
from src.records.redis_client import decoded, idempotency_key


def _sha256(parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def model_identity(settings: Settings) -> dict[str, str]:
    """What computes a transcript: the engine and the models it loads, as configured."""
    return {
        "engine": settings.worker_engine,
        "asr": settings.asr_model,
        "vad": settings.asr_vad_model,
        "punc": settings.asr_punc_model,
    }


def applied_hotwords(settings: Settings, requested: list[str]) -> list[str]:
    """The hotwords a worker will apply (the file's first, then the request's, capped), sorted."""
    words = read_hotwords_file(settings.asr_hotwords_path)
    return sorted(clean_hotwords([*words, *requested]))


def fingerprint(settings: Settings, audio_sha256: str, language: str, hotwords: list[str]) -> str:
    """The result cache's key: same fingerprint, same transcript."""
    return _sha256(
        {
            "audio": audio_sha256,
            "language": language,
            "hotwords": applied_hotwords(settings, hotwords),
            "model": model_identity(settings),
        }
    )


def request_fingerprint(result_fingerprint: str, batch_size: int, callback_url: str | None) -> str:
    """One request's identity under an idempotency key: the upload and every option sent. The
    callback_url is part of it only when given, so claims made before it was are still met."""
    fields: dict[str, object] = {"result": result_fingerprint, "batch_size": batch_size}
    if callback_url is not None:
        fields["callback_url"] = callback_url
    return _sha256(fields)


def scope(settings: Settings) -> str:
    """Idempotency keys are per API key: a hash of it (so a new key starts afresh), or `open`
    when the API has none."""
    if settings.api_key is None:
        return "open"
    return hashlib.sha256(settings.api_key.get_secret_value().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Claim:
    """An idempotency key as one request presents it: the Redis key and the request's identity."""

    key: str
    request: str

    def value(self, task_id: str) -> str:
        return json.dumps({"task_id": task_id, "request": self.request})


@dataclass(frozen=True)
class Claimed:
    """What a claim already holds: the task the key's first request created, and its identity."""

    task_id: str
    request: str


def claim_for(settings: Settings, key: str, request: str) -> Claim:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return Claim(key=idempotency_key(scope(settings), digest), request=request)


def read_claim(conn: redis.Redis | redis.client.Pipeline, claim: Claim) -> Claimed | None:
    raw = conn.get(claim.key)
    if raw is None:
        return None
    held = json.loads(decoded(raw))
    return Claimed(task_id=held["task_id"], request=held["request"])
