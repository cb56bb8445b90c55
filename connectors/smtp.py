"""Alert delivery over SMTP with the standard library.

stdlib ``smtplib`` rather than a mail helper: it takes a timeout (a silent
server must not hang the monitor flow), sends the ``multipart/related``
message exactly as composed, and reports per-recipient refusals.

What is retried follows the SMTP reply classes (RFC 5321 4.2.1): a 4xx reply,
a refused or reset connection, a timeout or a dropped session are *temporary*
and retried with exponential backoff on a fresh connection; a 5xx reply
(unknown mailbox, policy rejection, bad credentials) is *permanent* and
retrying would only hammer the server, so the caller gets
``permanent=True`` and records the delivery as rejected. Recipients that were
accepted are never sent to again within one call, so a 4xx for one recipient
does not duplicate the message for the others.

Exactly-once needs the caller to learn of an acceptance at once, not after
the retries for other recipients and their back-off sleeps: ``on_accepted``
is called with the recipients the server took right after its 250 to DATA,
so the ledger can be marked before anything else can go wrong. What remains
SMTP cannot close: the client has no way to ask a server whether it took a
message. The one case a client can see is a session that drops after the
whole message went out but before the server's reply: it may have been
accepted, so it is *not* retried (a blind retry is how duplicates happen);
those recipients come back as ``unconfirmed`` and the caller decides.

The password goes to ``SMTP.login`` and nowhere else: no debug level (it
prints the base64 of the credentials), and every error text is scrubbed of it
before it is logged or returned.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Literal

from connectors.base import is_loopback

log = logging.getLogger("backlash.smtp")

Security = Literal["ssl", "starttls", "none"]
MAX_BACKOFF = 60.0


class _AmbiguousDelivery(Exception):  # noqa: N818 - internal signal, not an error API
    """The message went out in full, then the session died before the reply."""


class _TrackData:
    """Notes when the final ``.`` of DATA has been written, so a dropped
    session can be told apart: before it, the server cannot have accepted."""

    final_sent = False

    def send(self, s: bytes | str) -> None:
        super().send(s)  # type: ignore[misc]
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.final_sent = True

    def data(self, msg: bytes | str) -> tuple[int, bytes]:
        self.final_sent = False
        try:
            return super().data(msg)  # type: ignore[misc]
        except smtplib.SMTPResponseException:
            raise  # the server answered: not ambiguous
        except OSError as exc:  # SMTPServerDisconnected, timeouts, resets
            if self.final_sent:
                raise _AmbiguousDelivery(f"{type(exc).__name__}: {exc}") from exc
            raise


class _SMTP(_TrackData, smtplib.SMTP):
    pass


class _SMTPSSL(_TrackData, smtplib.SMTP_SSL):
    pass


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one :func:`send`.

    ``refused`` maps each recipient the server turned down for good (5xx)
    to its (code, reply). ``deferred`` lists recipients still refused with a
    4xx when retries ran out: worth another try on a later run. When the
    status is ``sent`` (others got it), deferred recipients are listed in
    ``refused`` too, so a caller that only reads ``refused`` never records
    them as delivered; when it is ``failed`` they are not, so such a caller
    retries them rather than giving up. ``unconfirmed`` lists recipients of a
    session that dropped after the whole message was sent: the server may
    have taken it, so they were not retried.
    """

    status: Literal["sent", "failed"]
    permanent: bool = False
    detail: str | None = None
    accepted: tuple[str, ...] = ()
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    deferred: tuple[str, ...] = ()
    attempts: int = 0
    unconfirmed: tuple[str, ...] = ()


def _recipients(msg: EmailMessage) -> list[str]:
    """Envelope recipients from To, Cc and Bcc, as ``smtplib`` would take them."""
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in msg.get_all(name, [])]
    seen: dict[str, None] = {}
    for _, addr in getaddresses(fields):
        if addr:
            seen.setdefault(addr, None)
    return list(seen)


def _reply(code: int, raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return f"{code} {' '.join(text.split())}"


def _scrubber(secrets: list[str]) -> Callable[[str], str]:
    """Remove the password (plain and base64, as AUTH sends it) from text."""
    needles = [s for s in secrets if s]
    for s in list(needles):
        needles.append(base64.b64encode(s.encode()).decode())
    needles.sort(key=len, reverse=True)

    def scrub(text: str) -> str:
        for needle in needles:
            text = text.replace(needle, "***")
        return text

    return scrub


def _connect(
    host: str, port: int, security: Security, timeout: float, context: ssl.SSLContext
) -> smtplib.SMTP:
    if security == "ssl":
        return _SMTPSSL(host, port, timeout=timeout, context=context)
    smtp = _SMTP(host, port, timeout=timeout)
    try:
        smtp.ehlo()
        if security == "starttls":
            # Raises SMTPNotSupportedError if the server does not offer it:
            # never fall back to sending in the clear.
            smtp.starttls(context=context)
            smtp.ehlo()
    except BaseException:
        smtp.close()
        raise
    return smtp


def _attempt(
    msg: EmailMessage,
    pending: list[str],
    *,
    host: str,
    port: int,
    security: Security,
    user: str | None,
    password: str | None,
    timeout: float,
    context: ssl.SSLContext,
) -> dict[str, tuple[int, bytes]]:
    """One connection: returns the refused subset of ``pending`` (empty: all taken)."""
    smtp = _connect(host, port, security, timeout, context)
    try:
        if user:
            smtp.login(user, password or "")
        try:
            refused = smtp.send_message(msg, to_addrs=pending)
        except smtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients  # every recipient refused: still per-recipient codes
        # The message is accepted once DATA got its 250; QUIT is a courtesy.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        return refused
    finally:
        smtp.close()


def send(
    msg: EmailMessage,
    *,
    host: str,
    port: int,
    security: Security,
    user: str | None,
    password: str | None,
    timeout: float = 30,
    retries: int = 3,
    backoff: float = 1.0,
    ssl_context: ssl.SSLContext | None = None,
    envelope_to: list[str] | None = None,
    on_accepted: Callable[[tuple[str, ...]], None] | None = None,
) -> SendResult:
    """Deliver ``msg`` to its To/Cc/Bcc recipients; never raises for delivery errors.

    Up to ``retries`` further attempts follow a temporary failure, waiting
    ``backoff * 2**n`` seconds (capped at a minute). ``ssl_context`` replaces
    the default verifying context, for a private CA. ``envelope_to`` sends to
    these addresses instead of the headers' (a retry to the one recipient
    left, the headers still showing everyone). ``on_accepted`` is called after
    each accepted DATA with the recipients it covered; an exception from it
    propagates (the caller could not record the delivery: that is a crash).
    """
    if security not in ("ssl", "starttls", "none"):
        raise ValueError(f"security must be ssl, starttls or none, not {security!r}")
    scrub = _scrubber([password or ""])
    recipients = list(dict.fromkeys(envelope_to)) if envelope_to is not None else _recipients(msg)
    if not recipients:
        return SendResult("failed", permanent=True, detail="message has no recipients")
    if security == "none" and user and not is_loopback(host):
        return SendResult(
            "failed",
            permanent=True,
            detail=f"refusing to send credentials unencrypted to {host}: use ssl or starttls",
        )
    context = ssl_context or ssl.create_default_context()
    pending = list(recipients)
    accepted: list[str] = []
    refused: dict[str, tuple[int, str]] = {}
    detail: str | None = None
    permanent = False
    attempts = 0
    unconfirmed: tuple[str, ...] = ()
    while pending and attempts <= retries:
        if attempts:
            time.sleep(min(backoff * 2 ** (attempts - 1), MAX_BACKOFF))
        attempts += 1
        try:
            rejected = _attempt(
                msg,
                pending,
                host=host,
                port=port,
                security=security,
                user=user,
                password=password,
                timeout=timeout,
                context=context,
            )
        except _AmbiguousDelivery as exc:
            detail = scrub(f"{host}:{port}: session dropped awaiting the reply to DATA: {exc}")
            unconfirmed, pending = tuple(pending), []
            break
        except smtplib.SMTPResponseException as exc:
            # Sender refused, DATA refused, AUTH refused, greeting refused...
            detail = scrub(_reply(exc.smtp_code, exc.smtp_error))
            if 500 <= exc.smtp_code < 600:
                permanent = True
                break
        except smtplib.SMTPNotSupportedError as exc:
            detail, permanent = scrub(f"{host}:{port}: {exc}"), True
            break
        except ssl.SSLCertVerificationError as exc:
            detail = scrub(f"{host}:{port}: TLS certificate not trusted: {exc.verify_message}")
            permanent = True
            break
        except (smtplib.SMTPException, OSError) as exc:
            # Timeouts, refused/reset connections, dropped sessions, TLS hiccups.
            kind = "timed out" if isinstance(exc, TimeoutError) else "error"
            detail = scrub(f"{host}:{port}: {kind}: {type(exc).__name__}: {exc}")
        else:
            temporary: list[str] = []
            taken = tuple(r for r in pending if r not in rejected)
            if taken and on_accepted is not None:
                on_accepted(taken)
            for rcpt in pending:
                if rcpt not in rejected:
                    accepted.append(rcpt)
                    refused.pop(rcpt, None)
                    continue
                code, raw = rejected[rcpt]
                refused[rcpt] = (code, scrub(_reply(code, raw)))
                if 400 <= code < 500:
                    temporary.append(rcpt)
            pending = temporary
            if pending:
                detail = f"deferred by server: {', '.join(refused[r][1] for r in pending)}"
        if pending and attempts <= retries:
            log.warning(
                "SMTP %s:%s attempt %d/%d failed, retrying: %s",
                host,
                port,
                attempts,
                retries + 1,
                detail,
            )
    deferred = () if permanent else tuple(pending)
    for rcpt in pending:
        if accepted:
            refused.setdefault(rcpt, (0, detail or "not delivered"))
        else:
            refused.pop(rcpt, None)
    if accepted:
        log.info(
            "SMTP %s:%s accepted %s for %d recipient(s), refused %d",
            host,
            port,
            msg.get("Message-ID", "?"),
            len(accepted),
            len(refused),
        )
        return SendResult(
            "sent",
            detail=detail if refused or unconfirmed else None,
            accepted=tuple(accepted),
            refused=refused,
            deferred=deferred,
            attempts=attempts,
            unconfirmed=unconfirmed,
        )
    if refused and not pending and not permanent and not unconfirmed:
        # Every recipient refused with a 5xx.
        permanent = True
        detail = "; ".join(f"{r}: {reply}" for r, (_, reply) in refused.items())
    log.error("SMTP %s:%s delivery failed (permanent=%s): %s", host, port, permanent, detail)
    return SendResult(
        "failed",
        permanent=permanent,
        detail=detail,
        refused=refused,
        deferred=deferred,
        attempts=attempts,
        unconfirmed=unconfirmed,
    )
