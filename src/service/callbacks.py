"""The completion webhook: check a `callback_url`, sign and POST a finished task's result to it.

A callback is signed with CALLBACK_SECRET: `X-ASR-Signature: sha256=<hex>` is HMAC-SHA256 over
`"<X-ASR-Timestamp>.<body>"`, so a receiver can check that the body came from this service and
reject a replay whose timestamp is older than its tolerance (the README suggests 5 minutes).

The SSRF guard runs at submit and again at each delivery, after DNS resolution, on every address
the name resolves to: a name that later resolves to a forbidden address is refused then. (httpx
resolves the name once more to connect; a DNS server that answers differently within that
instant is beyond this guard: set CALLBACK_ALLOW_* to the least the receivers need.)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
from loguru import logger

from src.config import Settings
from src.records import task_store
from src.records.task_store import CallbackAttempt, TaskRecord, utcnow
from src.service.errors import CallbackRefused, CallbacksNotConfigured

MAX_URL_LENGTH = 2048
TIMESTAMP_HEADER = "X-ASR-Timestamp"
SIGNATURE_HEADER = "X-ASR-Signature"
TASK_HEADER = "X-ASR-Task-Id"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services outside link-local (AWS's IPv6 one, Alibaba's): always refused.
METADATA = (ipaddress.ip_network("fd00:ec2::254/128"), ipaddress.ip_network("100.100.100.200/32"))


class DeliveryFailed(RuntimeError):
    """One delivery attempt did not reach a 2xx; RQ tries the job again after its back-off."""


def address_refusal(address: IPAddress, settings: Settings) -> str | None:
    """Why the guard refuses this address, or None when a callback may go there."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address_refusal(address.ipv4_mapped, settings)
    if any(address in net for net in METADATA):
        return "a cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:  # 169.254/16 (incl. 169.254.169.254), fe80::/10
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_loopback:
        return None if settings.callback_allow_loopback else "a loopback address"
    if address.is_reserved:  # 240/4 (which the stdlib also counts as private)
        return "a reserved address"
    if address.is_private:  # 10/8, 172.16/12, 192.168/16, fc00::/7, and the like
        return None if settings.callback_allow_private else "a private address"
    if not address.is_global:  # 100.64/10 (carrier NAT) and other special ranges
        return "a reserved address"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal address is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CallbackRefused(reason=f"the host does not resolve: {host}") from exc
    # IPv6 scope ids ("fe80::1%eth0") are cut: the address itself decides
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_url(url: str, settings: Settings) -> str:
    """The URL, if callbacks are configured and the SSRF guard lets it through; else the named
    error saying why."""
    if settings.callback_secret is None:
        raise CallbacksNotConfigured()
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(reason=f"longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(reason=f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused(reason="only http and https URLs are accepted")
    if not parts.hostname:
        raise CallbackRefused(reason="the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused(reason="credentials in the URL are not accepted")
    port = port or (443 if parts.scheme == "https" else 80)
    for address in resolve(parts.hostname, port):
        why = address_refusal(address, settings)
        if why is not None:
            raise CallbackRefused(reason=f"{parts.hostname} is {why} ({address})")
    return url


def payload(record: TaskRecord) -> dict[str, Any]:
    """The callback's body: the final result, as /result shows a finished task."""
    return {
        "task_id": record.task_id,
        "status": record.status.value,
        "text": record.text,
        "sentences": [s.model_dump() for s in record.sentences],
        "duration": record.duration,
        "error": record.error,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "cached": record.cached,
    }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 over `"<timestamp>.<body>"`."""
    message = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def deliver(conn: redis.Redis, settings: Settings, task_id: str, name: str) -> bool:
    """One delivery attempt, recorded on the task and in the log; raises DeliveryFailed when it
    should be tried again. False when there is nothing to deliver (task gone, no URL)."""
    record = task_store.load(conn, task_id)
    if record is None or record.callback_url is None or settings.callback_secret is None:
        logger.info(f"{name} task={task_id} callback skipped: task, URL or secret gone")
        return False
    body = json.dumps(payload(record), ensure_ascii=False, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(settings.callback_secret.get_secret_value(), timestamp, body),
        TASK_HEADER: task_id,
    }
    attempt = CallbackAttempt(at=utcnow())
    try:
        check_url(record.callback_url, settings)
        response = httpx.post(
            record.callback_url,
            content=body,
            headers=headers,
            timeout=settings.callback_timeout_seconds,
            follow_redirects=False,  # a redirect could lead past the guard
        )
        attempt.status_code = response.status_code
        attempt.delivered = response.is_success
        if not response.is_success:
            attempt.error = f"HTTP {response.status_code}"
    except CallbackRefused as exc:
        attempt.error = f"refused: {exc.reason}"
    except httpx.HTTPError as exc:
        attempt.error = f"{type(exc).__name__}: {exc}"[:300]
    task_store.add_callback_attempt(conn, task_id, attempt)
    if attempt.delivered:
        logger.info(f"{name} task={task_id} callback delivered status={attempt.status_code}")
        return True
    logger.warning(f"{name} task={task_id} callback failed: {attempt.error}")
    raise DeliveryFailed(attempt.error or "not delivered")
