"""Alert delivery to a webhook (Slack incoming webhooks and look-alikes).

``requests`` with urllib3's ``Retry`` rather than a hand-written loop: it
already parses ``Retry-After`` (seconds or an HTTP date), backs off
exponentially with a cap, and counts connect, read and status retries
separately. What we decide is what is safe to repeat, because a POST is not
idempotent and Slack does not de-duplicate:

- a refused connection, a 429 or a 502/503/504 means the message was not
  taken: retried, honouring ``Retry-After`` (capped by ``max_wait``);
- a 500 or a read timeout may mean it *was* taken: not retried here, and
  reported as ``unknown`` so the ledger does not blindly post it again;
- any other 4xx (a revoked URL: 403/404/410, a malformed payload: 400) or a
  redirect (not followed: it would re-send the secret elsewhere) is
  permanent: ``rejected``.

The URL is a secret (Slack's carries the token in its path): it is never
logged, and every error text is scrubbed of it before it is returned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

log = logging.getLogger("backlash.webhook")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_BODY_CHARS = 300  # of the server's reply kept in ``detail``
URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry")


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """``status``: sent (2xx); rejected (permanent 4xx); failed (not taken,
    worth another run); unknown (may have been taken: do not repeat blindly)."""

    status: Literal["sent", "rejected", "failed", "unknown"]
    http_status: int | None = None
    detail: str | None = None
    attempts: int = 0


def _session(retries: int, backoff: float, max_wait: float) -> requests.Session:
    retry = Retry(
        total=retries,
        connect=retries,
        read=0,  # the request may have arrived: repeating it could post twice
        status=retries,
        other=0,
        allowed_methods=frozenset({"POST"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        backoff_max=max_wait,
        respect_retry_after_header=True,
        retry_after_max=max(1, int(max_wait)),
        raise_on_status=False,
        raise_on_redirect=False,
        redirect=0,  # a redirected webhook is a misconfiguration, not a hop to follow
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _needles(url: str) -> list[str]:
    """The URL and its path+query: urllib3 messages name only the latter."""
    parts = urlsplit(url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    return [n for n in (url, tail) if n and n != "/"]


def _scrub(text: str, url: str) -> str:
    for needle in _needles(url):
        text = text.replace(needle, "<webhook url>")
    return text


class _Redact(logging.Filter):
    """Scrubs the URL from urllib3's own log records ("Retrying ... /path")."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = _scrub(message, self.url)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


@contextmanager
def _redacted_urllib3_logs(url: str) -> Iterator[None]:
    redact = _Redact(url)
    loggers = [logging.getLogger(name) for name in URLLIB3_LOGGERS]
    for logger in loggers:
        logger.addFilter(redact)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(redact)


def _error(
    status: Literal["failed", "unknown"], exc: Exception, url: str, attempts: int
) -> WebhookResult:
    log.warning("webhook delivery %s: %s", status, type(exc).__name__)
    return WebhookResult(
        status, detail=_scrub(f"{type(exc).__name__}: {exc}", url), attempts=attempts
    )


def post(
    url: str,
    payload: dict[str, Any],
    *,
    timeout: float = 10.0,
    retries: int = 3,
    backoff: float = 1.0,
    max_wait: float = 60.0,
) -> WebhookResult:
    """POST ``payload`` as JSON to ``url``; never raises for delivery errors."""
    if not url.startswith(("https://", "http://")):
        return WebhookResult("rejected", detail="webhook URL must be http(s)")
    session = _session(retries, backoff, max_wait)
    try:
        with _redacted_urllib3_logs(url):
            response = session.post(url, json=payload, timeout=timeout, allow_redirects=False)
    except requests.exceptions.ConnectTimeout as exc:
        return _error("failed", exc, url, retries + 1)
    except requests.exceptions.ReadTimeout as exc:
        return _error("unknown", exc, url, 1)
    except requests.exceptions.ConnectionError as exc:
        # Connect errors (retries exhausted: nothing was sent) or a connection
        # dropped after the request went out (it may have arrived).
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        never_sent = isinstance(reason, NewConnectionError | ConnectTimeoutError)
        return _error("failed" if never_sent else "unknown", exc, url, retries + 1)
    except requests.exceptions.RequestException as exc:
        return _error("failed", exc, url, 1)
    finally:
        session.close()
    history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
    attempts = len(history) + 1
    code = response.status_code
    body = _scrub(response.text[:MAX_BODY_CHARS], url)
    if 200 <= code < 300:
        return WebhookResult("sent", code, attempts=attempts)
    detail = f"HTTP {code}: {' '.join(body.split())}"
    if code in RETRY_STATUSES or code == 408:
        status: Literal["rejected", "failed", "unknown"] = "failed"
    elif 300 <= code < 500:
        status = "rejected"  # a moved or revoked hook, a bad payload: fix the config
    else:
        status = "unknown"  # 500 and others: the server may have posted it
    log.warning("webhook delivery %s after %d attempt(s): HTTP %d", status, attempts, code)
    return WebhookResult(status, code, detail=detail, attempts=attempts)
