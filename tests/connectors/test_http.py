"""The HTTP layer against a real local server (pytest-httpserver), with a fake clock."""

from __future__ import annotations

import base64
import logging
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pytest_httpserver import HTTPServer

from connectors.base import ConnectorError
from connectors.http import HttpStatusError, TokenBucket, parse_retry_after
from tests.connectors.fake_zendesk import FakeClock

TOKEN = "tok_Sup3rS3cretValue"


def test_retry_after_forms() -> None:
    now = 1_000_000.0
    assert parse_retry_after("2.75", now=now) == pytest.approx(2.75)
    assert parse_retry_after("7", now=now) == 7.0
    when = datetime.fromtimestamp(now, UTC) + timedelta(seconds=42)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=now) == pytest.approx(42)
    assert parse_retry_after("-3", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


def test_429_waits_the_fractional_retry_after(httpserver: HTTPServer) -> None:
    clock = FakeClock()
    httpserver.expect_ordered_request("/x").respond_with_data(
        "{}", status=429, headers={"Retry-After": "1.5"}
    )
    httpserver.expect_ordered_request("/x").respond_with_json({"ok": 1})
    session = clock.session()
    assert session.get_json(httpserver.url_for("/x")).data == {"ok": 1}
    assert session.throttled == 1
    assert 1.5 <= sum(clock.slept) <= 1.5 + 0.25


def test_429_with_http_date_retry_after(httpserver: HTTPServer) -> None:
    clock = FakeClock()
    when = datetime.fromtimestamp(clock.now, UTC) + timedelta(seconds=30)
    httpserver.expect_ordered_request("/x").respond_with_data(
        "", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}
    )
    httpserver.expect_ordered_request("/x").respond_with_json([1])
    session = clock.session(rate_per_minute=600)  # through the bucket this time
    assert session.get_json(httpserver.url_for("/x")).data == [1]
    assert 30 <= sum(clock.slept) <= 31.5


def test_5xx_backs_off_exponentially_then_succeeds(httpserver: HTTPServer) -> None:
    clock = FakeClock()
    for status in (500, 502, 503):
        httpserver.expect_ordered_request("/x").respond_with_data("oops", status=status)
    httpserver.expect_ordered_request("/x").respond_with_json({"ok": True})
    session = clock.session(backoff_base=2.0)
    assert session.get_json(httpserver.url_for("/x")).data == {"ok": True}
    assert len(clock.slept) == 3
    for attempt, slept in enumerate(clock.slept, start=1):
        ceiling = 2.0 * 2 ** (attempt - 1)
        assert ceiling / 2 <= slept <= ceiling  # jittered within the exponential step


def test_5xx_forever_gives_up_with_a_clear_error(httpserver: HTTPServer) -> None:
    clock = FakeClock()
    httpserver.expect_request("/x").respond_with_data("down", status=503)
    session = clock.session(max_retries=3)
    with pytest.raises(ConnectorError, match=r"answered 503 4 times"):
        session.get_json(httpserver.url_for("/x"))
    assert session.requests == 4


@pytest.mark.parametrize(
    ("status", "hint"), [(401, "credentials"), (403, "permission"), (404, "check the URL")]
)
def test_no_retry_on_auth_or_missing(httpserver: HTTPServer, status: int, hint: str) -> None:
    clock = FakeClock()
    httpserver.expect_request("/api").respond_with_data(f"bad token {TOKEN}", status=status)
    session = clock.session("acme")
    session.basic_auth("ops@acme.com/token", TOKEN, secret=TOKEN)
    with pytest.raises(HttpStatusError) as caught:
        session.get_json(httpserver.url_for("/api"))
    assert caught.value.status == status
    assert session.requests == 1
    assert clock.slept == []
    message = str(caught.value)
    assert "'acme'" in message
    assert hint in message
    assert TOKEN not in caught.value.body
    assert "[REDACTED]" in caught.value.body


def test_malformed_json_is_retried_then_read(httpserver: HTTPServer) -> None:
    clock = FakeClock()
    httpserver.expect_ordered_request("/p").respond_with_data('{"tickets": [{"id": 1', status=200)
    httpserver.expect_ordered_request("/p").respond_with_json({"tickets": [{"id": 1}]})
    session = clock.session()
    assert session.get_json(httpserver.url_for("/p")).data == {"tickets": [{"id": 1}]}
    assert session.requests == 2


def test_malformed_json_forever_raises_never_skips(httpserver: HTTPServer) -> None:
    clock = FakeClock()
    httpserver.expect_request("/p").respond_with_data('{"tickets": [', status=200)
    session = clock.session(json_retries=2)
    with pytest.raises(ConnectorError, match="malformed JSON 3 times"):
        session.get_json(httpserver.url_for("/p"))
    assert session.requests == 3


def test_connection_refused_is_retried_then_explained() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clock = FakeClock()
    session = clock.session("zd", max_retries=2, timeout=(0.5, 0.5))
    with pytest.raises(ConnectorError, match="unreachable after 3 attempts"):
        session.get_json(f"http://127.0.0.1:{port}/x")
    assert len(clock.slept) == 2


def test_token_bucket_never_exceeds_the_limit_in_any_minute() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, clock=clock, sleep=clock.sleep)
    sent: list[float] = []
    for _ in range(35):
        bucket.acquire()
        sent.append(clock())
    for i, start in enumerate(sent):
        in_window = [t for t in sent[i:] if t < start + 60.0]
        assert len(in_window) <= 10
    # ...and it is not needlessly slow: 35 requests in about 34 intervals of 6 s.
    assert sent[-1] - sent[0] == pytest.approx(34 * 6.0 * 1.01)


def test_remaining_zero_holds_the_next_request_until_reset(httpserver: HTTPServer) -> None:
    clock = FakeClock()
    httpserver.expect_ordered_request("/x").respond_with_json(
        {}, headers={"ratelimit-remaining": "0", "ratelimit-reset": "7"}
    )
    httpserver.expect_ordered_request("/x").respond_with_json({"n": 2})
    session = clock.session(rate_per_minute=600)
    session.get_json(httpserver.url_for("/x"))
    before = clock()
    session.get_json(httpserver.url_for("/x"))
    assert clock() - before >= 7.0


def test_zendesk_endpoint_header_holds_until_its_reset(httpserver: HTTPServer) -> None:
    clock = FakeClock()
    header = {"Zendesk-RateLimit-incremental-exports": "total=10; remaining=0; resets=41"}
    httpserver.expect_ordered_request("/x").respond_with_json({}, headers=header)
    httpserver.expect_ordered_request("/x").respond_with_json({})
    session = clock.session(rate_per_minute=600)
    session.get_json(httpserver.url_for("/x"))
    before = clock()
    session.get_json(httpserver.url_for("/x"))
    assert clock() - before >= 41.0


def test_a_lower_server_limit_slows_the_bucket(httpserver: HTTPServer) -> None:
    clock = FakeClock()
    httpserver.expect_request("/x").respond_with_json({}, headers={"X-Rate-Limit": "6"})
    session = clock.session(rate_per_minute=600)
    for _ in range(3):
        session.get_json(httpserver.url_for("/x"))
    # 600/min would space requests 0.1 s apart; the server's 6/min means 10 s.
    assert clock.slept[-1] >= 10.0


def test_secrets_never_reach_logs(httpserver: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    httpserver.expect_ordered_request("/t").respond_with_data(f"err {TOKEN}", status=500)
    httpserver.expect_ordered_request("/t").respond_with_data("", status=429)
    httpserver.expect_ordered_request("/t").respond_with_data(TOKEN, status=401)
    session = clock.session("acme")
    session.basic_auth("ops@acme.com/token", TOKEN, secret=TOKEN)
    basic = base64.b64encode(f"ops@acme.com/token:{TOKEN}".encode()).decode()
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectorError) as caught:
        session.get_json(httpserver.url_for("/t"))
    text = caplog.text + str(caught.value) + repr(caught.value)
    assert "retrying" in caplog.text  # the retries were logged...
    assert TOKEN not in text  # ...without the token
    assert basic not in text
    assert "Authorization" not in caplog.text
    # The server did receive the credentials: redaction is not missing auth.
    sent = httpserver.log[0][0].headers["Authorization"]
    assert sent == f"Basic {basic}"
