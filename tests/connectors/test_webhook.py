"""Webhook delivery against a real local HTTP server (pytest-httpserver).

Each test counts the requests the server saw, so "retried", "not retried" and
"waited for Retry-After" are measured.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from connectors.webhook import post

PATH = "/services/T000/B000/XXXXsecretTOKENxxxx"
PAYLOAD = {"text": "Complaints about pricing 4.1× normal", "blocks": []}


def client_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Log lines of the sending side (the test server, werkzeug, logs its own paths)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug"))


def url(httpserver: HTTPServer) -> str:
    return httpserver.url_for(PATH)


def test_posts_json_once(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request(PATH, method="POST", json=PAYLOAD).respond_with_data("ok")
    result = post(url(httpserver), PAYLOAD, timeout=5, retries=3, backoff=0.01)
    assert result.status == "sent"
    assert result.http_status == 200
    assert result.attempts == 1
    assert len(httpserver.log) == 1
    request = httpserver.log[0][0]
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.get_data()) == PAYLOAD


def test_429_with_retry_after_is_honoured_then_sent(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request(PATH, method="POST").respond_with_response(
        Response("rate limited", status=429, headers={"Retry-After": "1"})
    )
    httpserver.expect_ordered_request(PATH, method="POST").respond_with_data("ok")
    started = time.monotonic()
    result = post(url(httpserver), PAYLOAD, timeout=5, retries=3, backoff=0.01)
    elapsed = time.monotonic() - started
    assert result.status == "sent"
    assert result.attempts == 2
    assert len(httpserver.log) == 2
    assert elapsed >= 0.95  # waited as told, not the 0.01 s backoff


def test_retry_after_is_capped(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request(PATH, method="POST").respond_with_response(
        Response("slow down", status=429, headers={"Retry-After": "3600"})
    )
    httpserver.expect_ordered_request(PATH, method="POST").respond_with_data("ok")
    started = time.monotonic()
    result = post(url(httpserver), PAYLOAD, timeout=5, retries=3, backoff=0.01, max_wait=1)
    assert result.status == "sent"
    assert time.monotonic() - started < 10


def test_400_is_rejected_and_not_retried(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("invalid_blocks", status=400)
    result = post(url(httpserver), PAYLOAD, timeout=5, retries=3, backoff=0.01)
    assert result.status == "rejected"
    assert result.http_status == 400
    assert result.detail == "HTTP 400: invalid_blocks"
    assert len(httpserver.log) == 1


def test_503_until_retries_run_out_is_failed(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("down", status=503)
    result = post(url(httpserver), PAYLOAD, timeout=5, retries=2, backoff=0.01)
    assert result.status == "failed"
    assert result.http_status == 503
    assert len(httpserver.log) == 3


def test_500_may_have_posted_so_is_not_repeated(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data("oops", status=500)
    result = post(url(httpserver), PAYLOAD, timeout=5, retries=3, backoff=0.01)
    assert result.status == "unknown"
    assert len(httpserver.log) == 1


def test_read_timeout_is_unknown_and_not_repeated(httpserver: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response("ok")

    httpserver.expect_request(PATH, method="POST").respond_with_handler(slow)
    result = post(url(httpserver), PAYLOAD, timeout=0.5, retries=3, backoff=0.01)
    assert result.status == "unknown"
    assert result.detail is not None
    assert "Timeout" in result.detail
    time.sleep(1.2)  # let the slow handler finish before counting
    assert len(httpserver.log) == 1


def test_connection_refused_is_failed_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with caplog.at_level(logging.DEBUG):
        result = post(f"http://127.0.0.1:{port}{PATH}", PAYLOAD, timeout=1, retries=2, backoff=0.01)
    assert result.status == "failed"
    assert result.detail is not None
    assert "secretTOKEN" not in result.detail
    assert "Retrying" in client_logs(caplog)  # urllib3 did log its retries...
    assert "secretTOKEN" not in client_logs(caplog)  # ...without the secret


def test_the_url_never_reaches_logs_or_results(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_data(
        f"no such hook {url(httpserver)}", status=404
    )
    with caplog.at_level(logging.DEBUG):
        result = post(url(httpserver), PAYLOAD, timeout=5, retries=1, backoff=0.01)
    assert result.status == "rejected"
    assert result.detail is not None
    assert "secretTOKEN" not in result.detail
    assert "<webhook url>" in result.detail
    assert "secretTOKEN" not in client_logs(caplog)


def test_redirect_is_not_followed(httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATH, method="POST").respond_with_response(
        Response("", status=302, headers={"Location": "http://example.invalid/steal"})
    )
    result = post(url(httpserver), PAYLOAD, timeout=5, retries=1, backoff=0.01)
    assert result.status == "rejected"
    assert result.http_status == 302
    assert len(httpserver.log) == 1


def test_not_http_is_rejected_without_a_request() -> None:
    assert post("file:///etc/passwd", PAYLOAD).status == "rejected"
