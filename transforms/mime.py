"""Turn one raw RFC 822 message into the text a person wrote, whatever the sender did to it.

Support mail is the worst-formed mail there is: phones that send Latin-1 labelled
UTF-8, helpdesk widgets that send HTML only, bounces, out-of-office replies and
five levels of quoted history under two new lines. Everything here is pure (bytes
in, a frozen dataclass out) and built on the stdlib ``email`` package: the MIME
tree is parsed with ``policy.compat32`` (headers stay strings, ~4x faster than
``policy.default``, whose header registry cost ~3 ms a message), and
``policy.default``'s registry decodes only the headers that carry RFC 2047
words; each thing that was wrong with a message is recorded in
``defects`` instead of raising, and :class:`UnparseableMessage` is raised only
when there is nothing usable at all.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from html.parser import HTMLParser

__all__ = [
    "TRUNCATION_HEADER",
    "Attachment",
    "ParsedMessage",
    "UnparseableMessage",
    "decode_bytes",
    "extract_reply",
    "has_reply_prefix",
    "html_to_text",
    "normalize_subject",
    "parse_message",
    "parse_msgids",
]

# Connectors that cut a message at their size cap prepend this header (with the
# original size) so the parser can say the body is incomplete instead of guessing.
TRUNCATION_HEADER = "X-Backlash-Truncated"


class _CachedHeaderRegistry(HeaderRegistry):
    """The stdlib registry builds a new class on every lookup; build each once.

    That class creation was the largest single cost of parsing (~0.8 s per
    thousand messages); behaviour is unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# policy.default with the cached registry: same parsing, same objects.
_POLICY = policy.default.clone(header_factory=_CachedHeaderRegistry())

_FALLBACK_CHARSETS = ("utf-8", "cp1252", "latin-1")
# Single-byte charsets that senders declare by habit; valid multi-byte UTF-8 under
# such a label is almost never accidental, so we trust the bytes over the label.
_WESTERN_CODECS = frozenset({"ascii", "iso8859-1", "iso8859-15", "cp1252"})
_MAX_DEPTH = 40
_MAX_PARTS = 1_000


class UnparseableMessage(ValueError):  # noqa: N818 - the name is the contract
    """Nothing usable can be had from these bytes; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Attachment:
    """Metadata only: attachment bodies never leave the raw payload."""

    filename: str | None
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What the rest of the pipeline needs of one email.

    ``text`` is the whole readable body; ``body`` is the sender's own words
    (quoted history and signature removed), falling back to ``text`` when
    stripping leaves nothing (a bare forward). Message-IDs are kept without
    angle brackets.
    """

    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str
    from_addr: str | None
    from_name: str | None
    to: tuple[str, ...]
    date: datetime | None
    received_at: datetime | None
    text: str
    body: str
    is_auto: bool
    auto_reason: str | None
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    truncated: bool


# --------------------------------------------------------------------------- text


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _canonical_charset(label: str | None) -> str | None:
    if not label:
        return None
    try:
        return codecs.lookup(label.strip().strip('"').lower()).name
    except LookupError:
        return None


def decode_bytes(data: bytes, declared: str | None, defects: list[str]) -> str:
    """Decode with the declared charset, then utf-8, cp1252, latin-1 (which never fails).

    An unknown label (LookupError) or bytes that do not fit their label are
    recorded as defects; the text is never lost.
    """
    codec = _canonical_charset(declared)
    if declared and codec is None:
        defects.append(f"unknown charset {declared.strip()[:40]!r}")
    if codec is not None and data.isascii():
        return data.decode("ascii")
    if codec in _WESTERN_CODECS:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            defects.append(f"declared {declared} but content is utf-8")
            return text
    candidates = ([codec] if codec else []) + [c for c in _FALLBACK_CHARSETS if c != codec]
    for cand in candidates:
        try:
            text = data.decode(cand)
        except UnicodeDecodeError:
            continue
        if cand != codec and not data.isascii():
            if codec is not None:
                defects.append(f"bytes do not match declared charset {declared}; read as {cand}")
            elif declared is None:
                defects.append(f"undeclared 8-bit text; read as {cand}")
        return text
    return data.decode("latin-1")  # pragma: no cover - latin-1 decodes every byte


def _raw(msg: Message, name: str) -> str | None:
    """A header's raw text, unparsed: the header registry is the slowest part of parsing."""
    lname = name.lower()
    for key, value in msg.raw_items():  # type: ignore[attr-defined]
        if key.lower() == lname:
            return _unfold(str(value))
    return None


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value).replace("\r", "").replace("\n", " ")


def _header(msg: Message, name: str, defects: list[str]) -> str | None:
    """One header as clean text: RFC 2047 decoded, undeclared 8-bit bytes repaired."""
    raw = _raw(msg, name)
    if raw is None:
        return None
    if _has_surrogates(raw):
        raw = decode_bytes(raw.encode("utf-8", "surrogateescape"), None, defects)
        defects.append(f"8-bit bytes in {name} header")
    raw = _unfold(raw)
    if "=?" not in raw:
        # Nothing to decode: the registry would only re-render the same text, at
        # ~0.1 ms a header (the largest cost of parsing plain mail).
        return raw.strip()
    try:
        value = str(_POLICY.header_factory(name, raw))
    except Exception as exc:  # the header registry has raised on odd inputs before
        defects.append(f"unreadable {name} header: {type(exc).__name__}")
        value = raw
    return value.strip()


_MSGID_RE = re.compile(r"<([^<>\s]+)>")


def parse_msgids(value: str | None) -> list[str]:
    """Message-IDs in a Message-ID/In-Reply-To/References value, without brackets.

    Clients that forget the brackets get their bare token accepted when it
    looks like an id (contains ``@``).
    """
    if not value:
        return []
    found = _MSGID_RE.findall(value)
    if not found:
        found = [tok for tok in value.split() if "@" in tok and len(tok) < 250]
    return found


# --------------------------------------------------------------------------- HTML


class _TextExtractor(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "svg"})
    _BLOCK = frozenset(
        {
            "p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4",
            "h5", "h6", "blockquote", "pre", "hr", "section", "article", "header",
            "footer", "dt", "dd",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0
        self._quote_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag == "blockquote":
            self._quote_depth += 1
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "blockquote":
            self._quote_depth = max(0, self._quote_depth - 1)
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._quote_depth:
            # Quoted history in HTML mail: mark it the way plain text does so
            # reply extraction treats both alike.
            data = "\n".join("> " + line for line in data.splitlines() if line.strip())
            self.parts.append("\n" + data + "\n")
            return
        self.parts.append(data)


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: scripts, styles and head dropped, blocks on lines."""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # html.parser is lenient; this is a last resort
        return re.sub(r"<[^>]*>", " ", html)
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [re.sub(r"[ \t\f\v]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --------------------------------------------------------------------------- replies

_ATTRIBUTION_RES = [
    re.compile(r"^\s*On\b.{0,300}\bwrote:\s*$", re.IGNORECASE),
    re.compile(r"^\s*Am\b.{0,300}\bschrieb.{0,80}:\s*$", re.IGNORECASE),
    re.compile(r"^\s*Le\b.{0,300}\ba écrit\s*:\s*$", re.IGNORECASE),
    re.compile(r"^\s*El\b.{0,300}\bescribió\s*:\s*$", re.IGNORECASE),
    re.compile(r"^\s*Op\b.{0,300}\bschreef.{0,80}:\s*$", re.IGNORECASE),
    re.compile(r"^\s*-{2,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine)", re.I),
    re.compile(r"^\s*-{2,}\s*Forwarded message\s*-{2,}", re.IGNORECASE),
    re.compile(r"^\s*Begin forwarded message:", re.IGNORECASE),
    re.compile(r"^\s*_{20,}\s*$"),  # Outlook's rule above the quoted header block
]
_OUTLOOK_FROM_RE = re.compile(r"^\s*\*?(From|Von|De)\s*:\*?\s+\S", re.IGNORECASE)
_OUTLOOK_NEXT_RE = re.compile(
    r"^\s*\*?(Sent|Date|Gesendet|Envoyé|To|An|À|Subject|Betreff)\s*:", re.IGNORECASE
)
_SIGNATURE_RES = [
    re.compile(r"^-- ?$"),
    re.compile(r"^\s*Sent from my \w+", re.IGNORECASE),
    re.compile(r"^\s*Sent from (Mail|Outlook|Yahoo Mail|Samsung|ProtonMail)\b", re.IGNORECASE),
    re.compile(r"^\s*Get Outlook for \w+", re.IGNORECASE),
    re.compile(r"^\s*Von meinem \w+ gesendet", re.IGNORECASE),
    re.compile(r"^\s*Envoyé de mon \w+", re.IGNORECASE),
]


def extract_reply(text: str) -> str:
    """The new words of a reply: stop at the first quote header or signature, drop ``>`` lines.

    Quoted history is what the customer answered, not what they said; counting
    it would make one angry message look like five.
    """
    lines = text.splitlines()
    kept: list[str] = []
    for i, line in enumerate(lines):
        joined = line if i + 1 >= len(lines) else f"{line} {lines[i + 1]}"
        if any(rx.match(line) for rx in _ATTRIBUTION_RES):
            break
        # "On Mon, 3 Feb 2025 at 10:00, Jane <jane@x.com>\nwrote:" wraps in many clients.
        if line.lstrip().lower().startswith(("on ", "am ")) and _ATTRIBUTION_RES[0].match(joined):
            break
        if _OUTLOOK_FROM_RE.match(line) and any(
            _OUTLOOK_NEXT_RE.match(nxt) for nxt in lines[i + 1 : i + 4]
        ):
            break
        if any(rx.match(line) for rx in _SIGNATURE_RES):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


_SUBJECT_PREFIX_RE = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|wg|sv|vs|antw|odp|r|tr|rif|res|enc|ynt)\s*(?:\[\d+\])?\s*[:：]"
    r"|\[[^\]]{0,60}\]|\(fwd\))\s*",
    re.IGNORECASE,
)


_REPLY_PREFIX_RE = re.compile(
    r"^\s*(?:\[[^\]]{0,60}\]\s*)*(?:(?:re|fwd?|aw|wg|sv|vs|antw|odp|r|tr|rif|res|enc|ynt)"
    r"\s*(?:\[\d+\])?\s*[:：]|\(fwd\))",
    re.IGNORECASE,
)


def has_reply_prefix(subject: str | None) -> bool:
    """Whether the subject claims to answer or forward something ("Re:", "AW:", "Fwd:")."""
    return bool(subject) and _REPLY_PREFIX_RE.match(subject) is not None  # type: ignore[arg-type]


def normalize_subject(subject: str | None) -> str:
    """Subject without reply/forward prefixes and [list tags], casefolded, spaces collapsed."""
    if not subject:
        return ""
    text = subject
    while True:
        stripped = _SUBJECT_PREFIX_RE.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return " ".join(text.split()).casefold()


# --------------------------------------------------------------------------- auto mail

_AUTO_SUBJECT_RE = re.compile(
    r"^\s*(automatic reply|auto(matic)?[- ]?reply|autoreply|out of (the )?office|"
    r"abwesenheitsnotiz|réponse automatique|undeliverable|undelivered mail|"
    r"delivery status notification|mail delivery failed|returned mail|"
    r"failure notice|delivery failure)\b",
    re.IGNORECASE,
)
_DAEMON_LOCALPARTS = frozenset({"mailer-daemon", "postmaster"})


def _auto_reason(msg: Message, subject: str, from_addr: str | None) -> str | None:
    """Why this message was written by a machine, or None.

    Auto-replies must never count as complaints, and must never be answered.
    """
    auto_submitted = (_raw(msg, "Auto-Submitted") or "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return f"Auto-Submitted: {auto_submitted[:40]}"
    precedence = (_raw(msg, "Precedence") or "").strip().lower()
    if precedence in {"bulk", "junk", "auto_reply", "auto-reply"}:
        return f"Precedence: {precedence}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autorespond-Sender", "X-Autogenerated"):
        if name in msg:
            return name
    if msg.get_content_type() == "multipart/report":
        return "multipart/report"
    if from_addr and from_addr.split("@", 1)[0] in _DAEMON_LOCALPARTS:
        return "mailer-daemon sender"
    if _AUTO_SUBJECT_RE.match(subject):
        return "auto-reply subject"
    return None


# --------------------------------------------------------------------------- dates


def _to_utc(value: str | None, defects: list[str], what: str) -> datetime | None:
    if not value:
        defects.append(f"missing {what}")
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append(f"invalid {what}: {value[:60]!r}")
        return None
    if parsed is None:
        defects.append(f"invalid {what}: {value[:60]!r}")
        return None
    if parsed.tzinfo is None:
        defects.append(f"{what} without timezone, read as UTC")
        parsed = parsed.replace(tzinfo=UTC)
    try:
        result = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        defects.append(f"invalid {what}: {value[:60]!r}")
        return None
    if not 1990 <= result.year <= 2200:
        defects.append(f"implausible {what}: {result.isoformat()}")
        return None
    return result


def _received_at(msg: Message, defects: list[str]) -> datetime | None:
    """Time the topmost Received hop saw the message: the fallback for a missing Date."""
    received = msg.get_all("Received") or []
    for hop in received[:1]:
        _, _, stamp = str(hop).rpartition(";")
        scratch: list[str] = []
        when = _to_utc(stamp.strip(), scratch, "Received date")
        if when is not None:
            return when
        defects.append("unreadable Received date")
    return None


# --------------------------------------------------------------------------- body


_NOT_BASE64_RE = re.compile(r"[^A-Za-z0-9+/]")


def _lenient_base64(part: Message, defects: list[str]) -> bytes | None:
    """Decode base64 that the stdlib gives up on (junk characters, lost padding).

    ``get_payload(decode=True)`` returns the *encoded* text when base64 is
    broken, which would put "VGhlIG5ldyBw..." where the customer's words belong.
    """
    encoded = part.get_payload(decode=False)
    if not isinstance(encoded, str):
        return None
    # Keep the valid prefix only: what follows the first junk character is
    # rarely base64 of the same text, and decoding it would append noise.
    compact = re.sub(r"\s", "", encoded)
    junk = _NOT_BASE64_RE.search(compact)
    cleaned = compact[: junk.start()] if junk else compact
    if len(cleaned) % 4 == 1:  # one stray character cannot encode a byte
        cleaned = cleaned[:-1]
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        data = base64.b64decode(cleaned, validate=False)
    except (binascii.Error, ValueError):
        return None
    if cleaned.rstrip("=") != compact.rstrip("="):
        defects.append(f"broken base64 in {part.get_content_type()} part; decoded leniently")
    return data


def _part_bytes(part: Message, defects: list[str], *, lenient: bool = False) -> bytes:
    if lenient and str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
        data = _lenient_base64(part, defects)
        if data is not None:
            return data
    try:
        payload = part.get_payload(decode=True)
    except Exception as exc:
        defects.append(f"undecodable part {part.get_content_type()}: {type(exc).__name__}")
        return b""
    if isinstance(payload, bytes):
        return payload
    return b""


def _filename(part: Message, defects: list[str]) -> str | None:
    try:
        name = part.get_filename()
    except Exception as exc:
        defects.append(f"unreadable attachment name: {type(exc).__name__}")
        return None
    if name is None:
        return None
    name = str(name)
    if "=?" in name:  # RFC 2047 in a parameter: common, if not standard (compat32 keeps it)
        try:
            name = str(make_header(decode_header(name)))
        except Exception:
            defects.append("undecodable attachment name")
    if _has_surrogates(name):
        name = decode_bytes(name.encode("utf-8", "surrogateescape"), None, defects)
    # Only the base name, never a path: names are shown to people and may be hostile.
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if len(name) > 255:  # keep the extension: it is what tells a reader the type
        name = name[:200] + "…" + name[-54:]
    return name or None


@dataclass(slots=True)
class _Walk:
    plain: list[str]
    html: list[str]
    attachments: list[Attachment]
    defects: list[str]
    parts: int = 0


def _visit(part: Message, walk: _Walk, depth: int) -> None:
    walk.parts += 1
    if walk.parts > _MAX_PARTS:
        if walk.parts == _MAX_PARTS + 1:
            walk.defects.append(f"more than {_MAX_PARTS} MIME parts; rest ignored")
        return
    if depth > _MAX_DEPTH:
        walk.defects.append(f"MIME nesting deeper than {_MAX_DEPTH}; rest ignored")
        return
    ctype = part.get_content_type()
    maintype = ctype.partition("/")[0]
    if maintype == "message":
        # A forwarded or bounced message: its words are not this sender's.
        try:
            size = len(part.as_bytes())
        except Exception:
            size = 0
        walk.attachments.append(Attachment(_filename(part, walk.defects), ctype, size))
        return
    if part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    _visit(sub, walk, depth + 1)
        return
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None
    filename = _filename(part, walk.defects)
    if maintype == "text" and disposition != "attachment" and ctype in {"text/plain", "text/html"}:
        data = _part_bytes(part, walk.defects, lenient=True)
        try:
            charset = part.get_param("charset")
        except Exception:
            charset = None
        text = decode_bytes(data, str(charset) if charset else None, walk.defects)
        (walk.plain if ctype == "text/plain" else walk.html).append(text)
        return
    data = _part_bytes(part, walk.defects)
    walk.attachments.append(Attachment(filename, ctype, len(data)))


def _address(msg: Message, name: str, defects: list[str]) -> tuple[str | None, str | None]:
    value = _header(msg, name, defects)
    if not value:
        return None, None
    display, addr = parseaddr(value)
    addr = addr.strip().lower()
    if "@" not in addr:
        defects.append(f"no address in {name}")
        return (display or value)[:200] or None, None
    return display or None, addr


def parse_message(raw: bytes, *, max_body_chars: int = 100_000) -> ParsedMessage:
    """Parse one RFC 822 message; see the module docstring for what is tolerated."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise UnparseableMessage(f"not bytes but {type(raw).__name__}")
    raw = bytes(raw)
    if not raw.strip():
        raise UnparseableMessage("empty message")
    try:
        # compat32 keeps headers as strings; structured parsing happens only where a
        # header needs decoding (``_header``): 290 -> 1,175 messages/s on the demo mailbox.
        msg = email.message_from_bytes(raw, policy=policy.compat32)
    except Exception as exc:  # the parser is meant never to raise; be sure
        raise UnparseableMessage(f"MIME parser failed: {type(exc).__name__}: {exc}") from exc
    try:
        return _parse(msg, max_body_chars)
    except UnparseableMessage:
        raise
    except Exception as exc:
        raise UnparseableMessage(f"unexpected {type(exc).__name__}: {str(exc)[:200]}") from exc


def _parse(msg: Message, max_body_chars: int) -> ParsedMessage:
    defects: list[str] = [type(d).__name__ for d in msg.defects]
    if not any(h in msg for h in ("From", "Message-ID", "Date", "Subject")):
        raise UnparseableMessage("no RFC 822 headers (From, Message-ID, Date, Subject)")

    ids = parse_msgids(_header(msg, "Message-ID", defects))
    message_id = ids[0] if ids else None
    if message_id is None:
        defects.append("missing Message-ID")
    parents = parse_msgids(_header(msg, "In-Reply-To", defects))
    references = tuple(parse_msgids(_header(msg, "References", defects)))
    in_reply_to = parents[-1] if parents else (references[-1] if references else None)
    subject = _header(msg, "Subject", defects) or ""
    from_name, from_addr = _address(msg, "From", defects)
    to_value = _header(msg, "To", defects) or ""
    to = tuple(addr.lower() for _, addr in getaddresses([to_value]) if "@" in addr)
    date = _to_utc(_header(msg, "Date", defects), defects, "Date")
    received_at = _received_at(msg, defects)

    truncated_note = _raw(msg, TRUNCATION_HEADER)
    truncated = truncated_note is not None
    if truncated:
        defects.append(f"message truncated by connector ({truncated_note})")

    walk = _Walk([], [], [], defects)
    _visit(msg, walk, 0)
    if walk.plain and any(t.strip() for t in walk.plain):
        text = "\n\n".join(t.strip() for t in walk.plain if t.strip())
    elif walk.html:
        text = "\n\n".join(html_to_text(h) for h in walk.html)
    else:
        text = ""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > max_body_chars:
        text = text[:max_body_chars]
        truncated = True
        defects.append(f"body longer than {max_body_chars} characters; cut")
    body = extract_reply(text) or text.strip()

    reason = _auto_reason(msg, subject, from_addr)
    return ParsedMessage(
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        subject=subject,
        from_addr=from_addr,
        from_name=from_name,
        to=to,
        date=date,
        received_at=received_at,
        text=text,
        body=body,
        is_auto=reason is not None,
        auto_reason=reason,
        attachments=tuple(walk.attachments),
        defects=tuple(dict.fromkeys(defects)),
        truncated=truncated,
    )
