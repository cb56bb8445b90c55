"""One HTTP layer for every REST connector: timeouts, retries, rate limits, redaction.

Helpdesk APIs fail in the same few ways: they throttle (429 + ``Retry-After``,
sometimes fractional, sometimes an HTTP date), they have bad minutes (5xx,
dropped connections, a page cut off mid-JSON), and they refuse bad credentials
(401/403) or a wrong URL (404). The first two are waited out; the last must
stop the run at once with a message that says what to check, because retrying
a wrong token only locks the account.

A client-side token bucket per endpoint family keeps requests under the plan's
per-minute limit, so a long backfill does not live on 429s; it holds one token
at most, which keeps any sliding 60-second window under the limit too. Rate
headers (``X-Rate-Limit``, ``X-RateLimit-Remaining``, ``ratelimit-remaining``,
``ratelimit-reset``) tighten it when the server says so.

Secrets (tokens, the Basic credentials and their base64 form) are registered
with the session and scrubbed from every log line and exception text; headers
are never logged. ``sleep``, the monotonic ``clock`` and the ``wall_clock``
(for ``Retry-After`` dates) are injectable so tests run in milliseconds.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from connectors.base import ConnectorError

__all__ = [
    "HttpSession",
    "HttpStatusError",
    "JsonResponse",
    "TokenBucket",
    "parse_retry_after",
]

log = logging.getLogger("backlash.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 524})
_LIMIT_HEADERS = ("x-rate-limit", "x-ratelimit-total", "ratelimit-limit")
_REMAINING_HEADERS = ("x-rate-limit-remaining", "x-ratelimit-remaining", "ratelimit-remaining")
# A dropped connection or a body cut off mid-transfer: worth another try.
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
_HINTS: dict[int, str] = {
    401: "check the credentials (email/token or API key) and that the token is still active",
    403: "check that the account has API access and the permission to read tickets",
    404: "check the URL (subdomain/domain or base_url) and that the endpoint exists on this plan",
}


class HttpStatusError(ConnectorError):
    """The server answered with a status that retrying cannot fix."""

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class JsonResponse:
    data: Any
    status: int
    headers: Mapping[str, str]
    url: str


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: seconds (fractional too) or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


class TokenBucket:
    """At most ``per_minute`` requests in any 60 s: one token, refilled every 60/limit s.

    A one-token bucket never bursts, so a server counting a sliding minute never
    sees more than the limit; a 1 % margin absorbs clock granularity.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        margin: float = 1.01,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.interval = 60.0 / per_minute * margin
        self.margin = margin
        self._clock = clock
        self._sleep = sleep
        self._next = clock()
        self._lock = threading.Lock()

    def set_limit(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute * self.margin

    def acquire(self) -> float:
        """Block until a request may go; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            wait = max(0.0, self._next - now)
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            self._sleep(wait)
        return wait

    def hold_until(self, moment: float) -> None:
        """The server said the window is used up: no request before ``moment``."""
        with self._lock:
            self._next = max(self._next, moment)


class HttpSession:
    """``requests.Session`` with the retry, rate-limit and redaction rules above."""

    def __init__(
        self,
        source: str,
        *,
        rate_per_minute: float | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        max_retries: int = 6,
        max_throttled: int = 30,
        json_retries: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_wait: float = 900.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.source = source
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_throttled = max_throttled
        self.json_retries = json_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_wait = max_wait
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = "backlash/0.1"
        self._session.headers["Accept"] = "application/json"
        self._secrets: list[str] = []
        self._buckets: dict[str, TokenBucket] = {}
        self._default_rate = rate_per_minute
        # What the layer did: the benchmark and the tests read these.
        self.requests = 0
        self.throttled = 0
        self.retried = 0
        self.waited = 0.0

    # -- configuration ---------------------------------------------------------

    def basic_auth(self, user: str, password: str, *, secret: str | None = None) -> None:
        """HTTP Basic credentials; ``secret`` (the token part) and both encodings are redacted."""
        self._session.auth = (user, password)
        self.add_secret(secret if secret is not None else password)
        self.add_secret(base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))

    def bearer(self, token: str) -> None:
        self._session.headers["Authorization"] = f"Bearer {token}"
        self.add_secret(token)

    def add_secret(self, value: str | None) -> None:
        if value and len(value) >= 4 and value not in self._secrets:
            self._secrets.append(value)
            self._secrets.sort(key=len, reverse=True)

    def set_rate(self, key: str, per_minute: float) -> None:
        """Limit one endpoint family (e.g. ``"export"``) to ``per_minute`` requests."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = TokenBucket(per_minute, clock=self.clock, sleep=self.sleep)
        else:
            bucket.set_limit(per_minute)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------

    def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        rate_key: str = "default",
    ) -> JsonResponse:
        """GET ``url`` and parse its JSON, waiting out throttling and transient failures.

        Raises :class:`HttpStatusError` for statuses that retrying cannot fix and
        :class:`ConnectorError` when the retries are spent.
        """
        bucket = self._bucket(rate_key)
        failures = 0
        throttled = 0
        bad_json = 0
        where = self._where(url)
        while True:
            if bucket is not None:
                self.waited += bucket.acquire()
            self.requests += 1
            try:
                response = self._session.get(url, params=params, timeout=self.timeout)
            except _TRANSIENT as exc:
                failures += 1
                reason = type(exc).__name__
                if failures > self.max_retries:
                    raise ConnectorError(
                        f"source {self.source!r}: {where} unreachable after {failures} attempts "
                        f"({reason}); check the URL and the network"
                    ) from None
                self._pause(self._backoff(failures), f"{reason} on {where}")
                continue
            except requests.RequestException as exc:
                raise ConnectorError(
                    f"source {self.source!r}: request to {where} failed: "
                    f"{type(exc).__name__}: {self.redact(str(exc))}"
                ) from None
            self._read_rate_headers(response, bucket)
            status = response.status_code
            if status == 429:
                throttled += 1
                self.throttled += 1
                if throttled > self.max_throttled:
                    raise ConnectorError(
                        f"source {self.source!r}: still throttled (429) after {throttled} "
                        f"waits on {where}; lower rate_per_minute or check other API clients"
                    )
                wait = parse_retry_after(response.headers.get("Retry-After"), now=self.wall_clock())
                if wait is None:
                    wait = self._backoff(throttled)
                else:
                    # A little jitter so parallel clients do not return in lock-step.
                    wait += self._rng.uniform(0.0, min(1.0, 0.1 * wait + 0.05))
                self._pause(wait, f"429 on {where}", bucket=bucket)
                continue
            if status in RETRY_STATUSES or status >= 500:
                failures += 1
                if failures > self.max_retries:
                    raise ConnectorError(
                        f"source {self.source!r}: {where} answered {status} {failures} times; "
                        "the service may be down, try again later"
                    )
                hinted = parse_retry_after(
                    response.headers.get("Retry-After"), now=self.wall_clock()
                )
                self._pause(max(hinted or 0.0, self._backoff(failures)), f"{status} on {where}")
                continue
            if status >= 400:
                body = self.redact(response.text[:500])
                hint = _HINTS.get(status, "check the request parameters")
                raise HttpStatusError(
                    f"source {self.source!r}: {where} answered {status}: {hint}",
                    status=status,
                    body=body,
                )
            try:
                data = response.json()
            except (json.JSONDecodeError, ValueError) as exc:
                bad_json += 1
                if bad_json > self.json_retries:
                    raise ConnectorError(
                        f"source {self.source!r}: {where} sent malformed JSON "
                        f"{bad_json} times ({self.redact(str(exc))}); the page is not "
                        "skipped: the run stops here and resumes from the last page committed"
                    ) from None
                self._pause(self._backoff(bad_json), f"malformed JSON from {where}")
                continue
            return JsonResponse(
                data=data, status=status, headers=response.headers, url=response.url
            )

    # -- internals -------------------------------------------------------------

    def _bucket(self, key: str) -> TokenBucket | None:
        bucket = self._buckets.get(key)
        if bucket is None and self._default_rate:
            bucket = TokenBucket(self._default_rate, clock=self.clock, sleep=self.sleep)
            self._buckets[key] = bucket
        return bucket

    def _where(self, url: str) -> str:
        """Host and path only: query strings may carry cursors or, worse, keys."""
        parts = urlsplit(url)
        return self.redact(f"{parts.scheme}://{parts.netloc}{parts.path}")

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return ceiling * self._rng.uniform(0.5, 1.0)

    def _pause(self, seconds: float, why: str, *, bucket: TokenBucket | None = None) -> None:
        seconds = min(seconds, self.max_wait)
        self.retried += 1
        log.warning("source %s: %s; retrying in %.2f s", self.source, self.redact(why), seconds)
        if bucket is not None:
            # Through the bucket, so other requests of this family wait as well.
            bucket.hold_until(self.clock() + seconds)
            return
        self.waited += seconds
        self.sleep(seconds)

    def _read_rate_headers(self, response: requests.Response, bucket: TokenBucket | None) -> None:
        if bucket is None:
            return
        headers = response.headers
        limit = _first_number(headers, _LIMIT_HEADERS)
        if limit and limit > 0 and 60.0 / limit * bucket.margin > bucket.interval:
            bucket.set_limit(limit)
        if response.status_code == 429:
            return  # Retry-After decides
        remaining = _first_number(headers, _REMAINING_HEADERS)
        if remaining is not None and remaining <= 0:
            reset = _first_number(headers, ("ratelimit-reset",))
            bucket.hold_until(self.clock() + (reset if reset is not None else bucket.interval))
        # Zendesk's per-endpoint form: "Zendesk-RateLimit-<name>: total=10; remaining=0; resets=41".
        for name, value in headers.items():
            if name.lower().startswith("zendesk-ratelimit-"):
                fields = _key_values(value)
                if fields.get("remaining") == 0:
                    bucket.hold_until(self.clock() + fields.get("resets", bucket.interval))


def _first_number(headers: Mapping[str, str], names: Iterable[str]) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value.split(",")[0].strip())
        except ValueError:
            continue
    return None


def _key_values(value: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for part in value.replace(",", ";").split(";"):
        key, _, number = part.partition("=")
        try:
            found[key.strip().lower()] = float(number.strip())
        except ValueError:
            continue
    return found
