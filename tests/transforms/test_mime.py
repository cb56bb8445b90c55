"""parse_message against a corpus of hostile mail: each lands with its defects, or is refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.mime import (
    TRUNCATION_HEADER,
    UnparseableMessage,
    decode_bytes,
    extract_reply,
    html_to_text,
    normalize_subject,
    parse_message,
)

CORPUS = Path(__file__).parents[1] / "data" / "mail"


def load(name: str) -> bytes:
    return (CORPUS / f"{name}.eml").read_bytes()


def test_every_corpus_file_lands_or_is_refused_with_a_reason() -> None:
    files = sorted(CORPUS.glob("*.eml"))
    assert len(files) >= 15
    refused = {}
    for file in files:
        try:
            parsed = parse_message(file.read_bytes())
        except UnparseableMessage as exc:
            refused[file.stem] = exc.reason
        else:
            assert parsed.text or parsed.attachments, file.name
    assert set(refused) == {"empty", "garbage"}
    assert all(refused.values())


def test_html_only_mail_drops_scripts_styles_and_marks_quotes() -> None:
    parsed = parse_message(load("html_only_script"))
    assert parsed.subject == "Price increase – really?"  # RFC 2047 decoded
    assert "Your price went up by 30% & nobody told me." in parsed.text
    for hostile in ("document.cookie", "alert(1)", "color:red", "ignored title"):
        assert hostile not in parsed.text
    assert "> On Monday you wrote: we value you" in parsed.text
    assert "we value you" not in parsed.body
    assert "I will switch to a competitor." in parsed.body


@pytest.mark.parametrize(
    ("name", "words", "defect"),
    [
        ("wrong_charset", "Le nouveau prix est très élevé", "do not match declared charset"),
        ("declared_latin1_is_utf8", "¡El precio subió otra vez!", "content is utf-8"),
        ("undeclared_8bit", "Die Preiserhöhung ist unverschämt", "undeclared 8-bit"),
        ("unknown_charset", "I want a refund for the €20 fee.", "unknown charset 'x-klingon'"),
    ],
)
def test_charsets_never_crash_and_never_lose_text(name: str, words: str, defect: str) -> None:
    parsed = parse_message(load(name))
    assert words in parsed.body
    assert "\ufffd" not in parsed.body
    assert any(defect in d for d in parsed.defects), parsed.defects


def test_undeclared_8bit_headers_are_repaired() -> None:
    parsed = parse_message(load("undeclared_8bit"))
    assert parsed.subject == "Kündigung wegen Preiserhöhung"
    assert parsed.from_name == "Jörg Müller"
    assert parsed.from_addr == "joerg@example.de"


def test_dates_go_to_utc_and_bad_ones_become_none_with_a_defect() -> None:
    outlook = parse_message(load("outlook_reply"))
    assert outlook.date == datetime(2025, 2, 16, 0, 45, tzinfo=UTC)
    missing = parse_message(load("missing_date"))
    assert missing.date is None
    assert "missing Date" in missing.defects
    invalid = parse_message(load("invalid_date"))
    assert invalid.date is None
    assert any(d.startswith("invalid Date") for d in invalid.defects)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bounce", "multipart/report"),
        ("out_of_office", "Auto-Submitted: auto-replied"),
        ("precedence_bulk", "Precedence: bulk"),
    ],
)
def test_machine_mail_is_recognised(name: str, reason: str) -> None:
    parsed = parse_message(load(name))
    assert parsed.is_auto
    assert parsed.auto_reason == reason


def test_auto_submitted_no_is_a_person() -> None:
    assert not parse_message(load("auto_submitted_no")).is_auto


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("X-Autorespond: yes\n", "X-Autorespond"),
        ("Precedence: junk\n", "Precedence: junk"),
        ("Precedence: auto_reply\n", "Precedence: auto_reply"),
    ],
)
def test_each_auto_header_alone_marks_auto(headers: str, reason: str) -> None:
    raw = f"From: a@example.com\nSubject: hello\nMessage-ID: <x@y>\n{headers}\nbody\n"
    parsed = parse_message(raw.encode())
    assert (parsed.is_auto, parsed.auto_reason) == (True, reason)


def test_mailer_daemon_sender_alone_is_auto() -> None:
    raw = b"From: MAILER-DAEMON@mx.example\nSubject: Warning\nMessage-ID: <x@y>\n\nDelayed\n"
    assert parse_message(raw).auto_reason == "mailer-daemon sender"


def test_bounce_keeps_the_bounced_message_as_an_attachment_not_as_words() -> None:
    parsed = parse_message(load("bounce"))
    assert "We have processed your refund" not in parsed.text
    assert "message/rfc822" in {a.content_type for a in parsed.attachments}


def test_nested_multipart_prefers_plain_and_lists_attachments() -> None:
    parsed = parse_message(load("nested_multipart"))
    assert parsed.text.startswith("Export to CSV was removed in the last update.")
    assert "<b>" not in parsed.text
    kinds = {(a.filename, a.content_type) for a in parsed.attachments}
    assert ("invoice.pdf", "application/pdf") in kinds
    assert (None, "image/png") in kinds
    pdf = next(a for a in parsed.attachments if a.filename == "invoice.pdf")
    assert pdf.size == len(b"%PDF-1.4\n%\xc7\xec\x8f\xa2\n\n")


def test_malformed_mime_keeps_the_readable_prefix() -> None:
    parsed = parse_message(load("malformed_mime"))
    assert parsed.body == "The new price is twice what I paid last year."
    assert "CloseBoundaryNotFoundDefect" in parsed.defects
    assert any("broken base64" in d for d in parsed.defects)


def test_hostile_attachment_name_is_a_bare_printable_name_with_its_extension() -> None:
    parsed = parse_message(load("zipbomb_name"))
    (att,) = parsed.attachments
    assert att.filename is not None
    assert "/" not in att.filename
    assert "\x00" not in att.filename
    assert len(att.filename) <= 255
    assert att.filename.endswith(".pdf.zip")


def test_outlook_and_gmail_replies_keep_only_new_words() -> None:
    outlook = parse_message(load("outlook_reply"))
    assert outlook.body == "Splitting the service into two plans doubles our cost – not acceptable."
    assert "We split the service to serve you better." in outlook.text
    gmail = parse_message(load("gmail_reply_wrapped"))
    assert gmail.body == "Bring the dark mode back please."
    assert "Dark mode has been retired." in gmail.text


@pytest.mark.parametrize(
    "tail",
    [
        "On Mon, 3 Feb 2025, Support <s@acme.test> wrote:\n> old words",
        "-----Original Message-----\nFrom: s@acme.test\nold words",
        "From: Support <s@acme.test>\nSent: Monday, 3 February 2025 10:00\nTo: me\nold words",
        "> old words\n> more old words",
        "-- \nJane, old words Ltd",
        "Sent from my iPhone\nold words",
        "Am 03.02.2025 um 10:00 schrieb Support <s@acme.test>:\n> old words",
    ],
)
def test_extract_reply_cuts_each_kind_of_history(tail: str) -> None:
    text = f"The refund never arrived.\n\n{tail}"
    assert extract_reply(text) == "The refund never arrived."


def test_extract_reply_keeps_inline_answers_between_quotes() -> None:
    text = "> Did you restart?\nYes, twice.\n> And?\nStill broken."
    assert extract_reply(text) == "Yes, twice.\nStill broken."


def test_bare_forward_falls_back_to_full_text() -> None:
    raw = (
        b"From: a@example.com\nSubject: Fwd: bill\nMessage-ID: <f@y>\n\n"
        b"---------- Forwarded message ---------\nFrom: billing@acme.test\nYou owe 40 EUR\n"
    )
    parsed = parse_message(raw)
    assert "You owe 40 EUR" in parsed.body


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Re: Price", "price"),
        ("AW: WG: Preis", "preis"),
        ("SV: Fwd: [Ticket #12] Price  rise", "price rise"),
        ("RE[2]: price", "price"),
        ("Price", "price"),
        ("", ""),
    ],
)
def test_normalize_subject(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected


def test_decode_bytes_fallback_order() -> None:
    defects: list[str] = []
    assert decode_bytes("naïve".encode(), "x-unknown", defects) == "naïve"
    assert decode_bytes(b"caf\xe9 \x80", None, defects) == "café €"  # cp1252 before latin-1
    assert decode_bytes(b"\x81\x8d", None, defects) == "\x81\x8d"  # only latin-1 takes these
    assert any("unknown charset" in d for d in defects)


def test_html_to_text_escapes_nothing_and_runs_no_code() -> None:
    text = html_to_text("<p>a &lt;b&gt;</p><script>x()</script><style>p{}</style><br>c")
    assert [line for line in text.splitlines() if line] == ["a <b>", "c"]


def test_missing_message_id_and_no_from_are_defects_not_errors() -> None:
    parsed = parse_message(b"Subject: only a subject\n\nhello\n")
    assert parsed.message_id is None
    assert parsed.from_addr is None
    assert "missing Message-ID" in parsed.defects


def test_connector_truncation_is_reported() -> None:
    raw = f"{TRUNCATION_HEADER}: original-size=9000000; kept=100\r\n".encode() + load(
        "nested_multipart"
    )
    parsed = parse_message(raw)
    assert parsed.truncated
    assert any("truncated by connector" in d for d in parsed.defects)


def test_long_body_is_cut_to_max_chars() -> None:
    raw = b"From: a@example.com\nSubject: s\nMessage-ID: <l@y>\n\n" + b"word " * 50_000
    parsed = parse_message(raw, max_body_chars=1_000)
    assert len(parsed.text) == 1_000
    assert parsed.truncated


def test_deep_nesting_is_bounded() -> None:
    depth = 200
    head = "".join(
        f'--b{i}\nContent-Type: multipart/mixed; boundary="b{i + 1}"\n\n' for i in range(depth)
    )
    tail = "".join(f"--b{i}--\n" for i in reversed(range(depth + 1)))
    raw = (
        "From: a@example.com\nSubject: deep\nMessage-ID: <d@y>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="b0"\n\n'
        f"{head}--b{depth}\nContent-Type: text/plain\n\ninnermost words\n{tail}"
    ).encode()
    parsed = parse_message(raw)  # must not raise RecursionError
    assert parsed.subject == "deep"
    assert "innermost words" not in parsed.text
    assert any("nesting deeper" in d for d in parsed.defects)


@pytest.mark.slow
def test_twenty_megabyte_attachment_is_metadata_only_and_fast() -> None:
    msg = EmailMessage()
    msg["From"] = "big@example.com"
    msg["Subject"] = "huge log"
    msg["Message-ID"] = "<big@example.com>"
    msg["Date"] = "Mon, 10 Feb 2025 09:00:00 +0000"
    msg.set_content("The export is broken, log attached.")
    payload = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    msg.add_attachment(payload, maintype="application", subtype="octet-stream", filename="x.log")
    raw = msg.as_bytes()
    assert len(raw) > 20_000_000
    start = time.perf_counter()
    parsed = parse_message(raw)
    elapsed = time.perf_counter() - start
    assert parsed.body == "The export is broken, log attached."
    (att,) = parsed.attachments
    assert (att.filename, att.size) == ("x.log", len(payload))
    assert elapsed < 20


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2_000),
        st.builds(
            lambda head, body: head + b"\n\n" + body,
            st.sampled_from(
                [
                    b"From: a@b.c\nSubject: x\nContent-Type: multipart/mixed; boundary=q",
                    b"Subject: =?utf-8?b?broken\nContent-Type: text/plain; charset=\x00",
                    b"Message-ID: <<>>\nContent-Transfer-Encoding: base64",
                    b"Date: Mon, 99 Foo 99999 99:99:99 +9999\nFrom: <@>",
                ]
            ),
            st.binary(max_size=1_000),
        ),
    )
)
def test_arbitrary_bytes_parse_or_raise_unparseable_only(raw: bytes) -> None:
    try:
        parsed = parse_message(raw)
    except UnparseableMessage as exc:
        reason = exc.reason
        assert reason
        return
    assert isinstance(parsed.text, str)
    assert isinstance(parsed.body, str)


def test_rfc2047_words_are_decoded_in_names_subjects_and_attachment_names() -> None:
    """Headers are parsed as strings (compat32) and decoded only where RFC 2047 says so."""
    raw = (
        b"From: =?utf-8?q?In=C3=A8s_Dubois?= <Ines.Dubois@Example.com>\n"
        b"To: support@acme.test\n"
        b"Subject: =?utf-8?b?UHJpeCDDoCAxNSDigqw=?= is too much\n"
        b"Message-ID: <m1@x>\n"
        b"Date: Tue, 04 Mar 2025 10:00:00 -0500\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain; charset=utf-8\n\nThe new price.\n"
        b"--B\nContent-Type: application/pdf\n"
        b'Content-Disposition: attachment; filename="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="\n\n'
        b"AAAA\n--B--\n"
    )
    parsed = parse_message(raw)
    assert parsed.from_name == "Inès Dubois"
    assert parsed.from_addr == "ines.dubois@example.com"
    assert parsed.subject == "Prix à 15 € is too much"
    assert parsed.date == datetime(2025, 3, 4, 15, 0, tzinfo=UTC)
    assert [a.filename for a in parsed.attachments] == ["Résumé.pdf"]
    assert parsed.body == "The new price."
