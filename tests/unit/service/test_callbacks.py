"""The webhook's signature, body and SSRF guard, without Redis or HTTP."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import UTC, datetime
from pathlib import Path

import pytest

from src.records.task_store import TaskRecord
from src.service import callbacks
from src.service.errors import CallbackRefused, CallbacksNotConfigured
from src.vocabulary import Sentence, TaskStatus
from tests.support.fixtures import make_settings


def settings(**overrides: object):
    values: dict[str, object] = {"callback_secret": "s3cret"}
    values.update(overrides)
    return make_settings(6379, Path("/nonexistent"), **values)


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"task_id":"t","text":"\xe4\xbb\x8a\xe5\xa4\xa9"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert callbacks.sign("s3cret", 1700000000, body) == f"sha256={expected}"
    assert callbacks.sign("s3cret", 1700000001, body) != f"sha256={expected}"  # replay moved
    assert callbacks.sign("other", 1700000000, body) != f"sha256={expected}"


def test_payload_is_the_final_result():
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    record = TaskRecord(
        task_id="t1",
        filename="a.ogg",
        file="t1.ogg",
        created_at=now,
        finished_at=now,
        status=TaskStatus.DONE,
        text="今天天气很好。",
        duration=3.5,
        sentences=[Sentence(text="今天天气很好。", start=380, end=3100)],
        callback_url="http://127.0.0.1/x",
    )
    assert callbacks.payload(record) == {
        "task_id": "t1",
        "status": "done",
        "text": "今天天气很好。",
        "sentences": [{"text": "今天天气很好。", "start": 380, "end": 3100}],
        "duration": 3.5,
        "error": None,
        "finished_at": "2026-12-02T10:00:00+00:00",
        "cached": False,
    }


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "link-local"),
        ("169.254.1.2", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.10", "private"),
        ("fc00::1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_the_guard_refuses(address: str, reason: str):
    why = callbacks.address_refusal(ipaddress.ip_address(address), settings())
    assert why is not None and reason in why


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "8.8.8.8", "2001:4860:4860::8888"])
def test_the_guard_lets_through_loopback_and_public(address: str):
    assert callbacks.address_refusal(ipaddress.ip_address(address), settings()) is None


def test_private_and_loopback_follow_their_settings():
    open_private = settings(callback_allow_private=True, callback_allow_loopback=False)
    assert callbacks.address_refusal(ipaddress.ip_address("192.168.1.10"), open_private) is None
    loopback = callbacks.address_refusal(ipaddress.ip_address("::1"), open_private)
    assert loopback is not None and "loopback" in loopback
    # link-local stays refused whatever the settings
    assert callbacks.address_refusal(ipaddress.ip_address("169.254.169.254"), open_private)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/x", "http and https"),
        ("file:///etc/passwd", "http and https"),
        ("http:///nohost", "no host"),
        ("http://user:pw@127.0.0.1/x", "credentials"),
        ("http://127.0.0.1:99999/x", "not a valid URL"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://no-such-host.invalid/x", "does not resolve"),
    ],
)
def test_check_url_refuses(url: str, reason: str):
    with pytest.raises(CallbackRefused) as info:
        callbacks.check_url(url, settings())
    assert reason in info.value.reason


def test_localhost_resolves_to_loopback_and_is_allowed_by_default():
    assert callbacks.check_url("http://localhost:8081/x", settings()) == "http://localhost:8081/x"
    with pytest.raises(CallbackRefused, match="") as info:
        callbacks.check_url("http://localhost:8081/x", settings(callback_allow_loopback=False))
    assert "loopback" in info.value.reason


def test_no_secret_no_callbacks():
    with pytest.raises(CallbacksNotConfigured):
        callbacks.check_url("http://127.0.0.1/x", settings(callback_secret=None))
