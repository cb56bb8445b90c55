"""The alert email: structure clients render right, subject that says it all,
customer text that cannot break HTML or headers and leaks no personal data."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

import polars as pl
import pytest

from flows.alert_email import AlertView, compose, render_chart_png, render_html, subject_for

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
START = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)  # a Tuesday
NOW = START + timedelta(days=1, hours=3)


def make_series(start: datetime, days: int = 56, spike_from: int = 45) -> pl.DataFrame:
    first = start - timedelta(days=spike_from)
    ts = [first + timedelta(days=i) for i in range(days)]
    value = [10.0 + (i * 7 % 5) if i < spike_from else 38.0 + i % 4 for i in range(days)]
    return pl.DataFrame(
        {
            "ts": ts,
            "value": value,
            "expected": [11.5] * days,
            "lower": [6.0] * days,
            "upper": [17.0] * days,
        }
    )


def make_view(**overrides: Any) -> AlertView:
    fields: dict[str, Any] = {
        "alert_id": "pricing|*|day|2026-03-10",
        "notice": "new",
        "topic": "pricing",
        "channel": "*",
        "grain": "day",
        "started_at": START,
        "detected_at": NOW,
        "observed": 47.0,
        "expected": 11.5,
        "excess": 35.5,
        "lower": 28.0,  # the 90% interval of the excess, not of the count
        "upper": 43.0,
        "ratio": 4.087,
        "p_value": 1e-9,
        "severity": 3,
        "status": "open",
        "change_id": "price-2026-03",
        "change_title": "Plan price rise",
        "change_kind": "price",
        "change_announced_at": START - timedelta(hours=2),
        "change_effective_at": START + timedelta(days=5),
        "runner_up_title": "Dark mode removed",
        "rising_terms": ["price", "expensive", "cancel", "bob@corp.test"],
        "examples": [
            ("zendesk:101", "I paid $15.98 and now $19.99?! Mail me at jane.roe@example.com"),
            ("zendesk:102", "Call +44 20 7946 0958, card 4111 1111 1111 1111 was charged twice"),
            ("imap:abc", "Cancelling since 2026-03-10, error NW-2-5 on checkout"),
        ],
        "series": make_series(START),
        "candidate_changes": [
            ("Dark mode removed", START - timedelta(days=6), START - timedelta(days=6)),
            ("Plan price rise", START - timedelta(hours=2), START + timedelta(days=5)),
        ],
        "recovery_hours": None,
        "sql_snippet": "SELECT count(*) FROM core.tickets\nWHERE created_at >= DATE '2026-03-10';",
    }
    fields.update(overrides)
    return AlertView(**fields)


def build(view: AlertView, **kwargs: Any) -> EmailMessage:
    args: dict[str, Any] = {
        "sender": "backlash <alerts@acme.test>",
        "to": ["ceo@acme.test", "cfo@acme.test"],
        "cc": ["support-lead@acme.test"],
        "message_id": "<pricing.new@backlash.invalid>",
        "now": NOW,
    }
    args.update(kwargs)
    return compose(view, **args)


def reparse(msg: EmailMessage) -> EmailMessage:
    """What a mail client sees: the message as bytes on the wire, parsed again."""
    parsed = BytesParser(policy=policy.default).parsebytes(msg.as_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(msg: EmailMessage) -> tuple[str, str, EmailMessage]:
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    images = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1
    return text.get_content(), html.get_content(), images[0]


class _Collector(HTMLParser):
    """Records what a browser would build: elements, and text inside them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.img_src: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.img_src += [v or "" for k, v in attrs if k == "src"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def collect(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


# --------------------------------------------------------------------------- structure


def test_message_is_related_alternative_with_inline_chart() -> None:
    msg = reparse(build(make_view()))
    assert msg.get_content_type() == "multipart/related"
    assert msg.get_param("type") == "multipart/alternative"
    root, image = msg.get_payload()
    assert root.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in root.get_payload()] == ["text/plain", "text/html"]
    text, html, png_part = parts(msg)
    assert png_part is image
    png = png_part.get_content()
    assert png.startswith(PNG_MAGIC)
    assert len(png) < 150_000
    cid = png_part["Content-ID"].strip("<>")
    assert collect(html).img_src == [f"cid:{cid}"]
    assert png_part.get_content_disposition() == "inline"
    assert "Plan price rise" in text


def test_headers_are_given_values() -> None:
    msg = reparse(build(make_view(), message_id="<a.b@backlash.invalid>"))
    assert msg["Message-ID"] == "<a.b@backlash.invalid>"
    assert msg["Date"].datetime == NOW
    assert [a.addr_spec for a in msg["To"].addresses] == ["ceo@acme.test", "cfo@acme.test"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["support-lead@acme.test"]
    assert msg["From"].addresses[0].addr_spec == "alerts@acme.test"
    assert msg["Subject"] == subject_for(make_view())
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["MIME-Version"] == "1.0"


def test_no_cc_header_when_cc_is_empty() -> None:
    assert reparse(build(make_view(), cc=[]))["Cc"] is None


@pytest.mark.slow
def test_same_inputs_give_byte_identical_message() -> None:
    """The outbox is idempotent only if a retried run composes the same bytes."""
    assert build(make_view()).as_bytes() == build(make_view()).as_bytes()
    other = build(make_view(observed=60.0)).as_bytes()
    assert other != build(make_view()).as_bytes()


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        build(make_view(), now=datetime(2026, 3, 11, 12, 0))


# --------------------------------------------------------------------------- subject


def test_subject_names_size_start_and_cause() -> None:
    subject = subject_for(make_view())
    assert subject == (
        "Complaints about pricing 4.1× normal since Tue 10 Mar"
        " — follows 'Plan price rise' (announced Tue 10 Mar)"
    )


def test_subject_without_change_points_to_incidents() -> None:
    view = make_view(change_id=None, change_title=None, change_announced_at=None)
    subject = subject_for(view)
    assert subject.endswith("— no product change found (check incidents)")
    assert "4.1×" in subject


def test_subject_of_resolved_notice() -> None:
    view = make_view(notice="resolved", status="resolved", recovery_hours=30.0)
    subject = subject_for(view)
    assert subject.startswith("Back to normal: complaints about pricing (")
    assert "30 h" in subject
    assert "4.1×" not in subject


def test_subject_of_escalation_says_worse() -> None:
    subject = subject_for(make_view(notice="escalated:4", severity=4))
    assert subject.startswith("Worse (critical): complaints about pricing 4.1× normal")


def test_subject_channel_and_effective_date_fallback() -> None:
    view = make_view(channel="email", change_announced_at=None)
    subject = subject_for(view)
    assert "complaints about pricing via email" in subject.lower()
    assert "(effective Sun 15 Mar)" in subject


# --------------------------------------------------------------------------- content


def test_body_carries_the_facts() -> None:
    text, html, _ = parts(reparse(build(make_view())))
    for body in (text, html):
        assert "47" in body
        assert "11.5" in body
        assert "35.5 more than usual (90% interval of the excess: 28 to 43)" in body
        assert "Dark mode removed" in body  # the runner-up
        assert "expensive" in body
        assert "core.tickets" in body
        assert "zendesk:102" in body


def test_examples_are_masked_everywhere() -> None:
    msg = build(make_view())
    raw = msg.as_bytes().decode("ascii", "replace")
    text, html, _ = parts(reparse(msg))
    for body in (text, html, raw):
        assert "jane.roe@" not in body
        assert "7946" not in body
        assert "4111 1111" not in body
        assert "bob@corp.test" not in body
    assert "j***@example.com" in text
    assert "**** **** **** 1111" in html
    # The facts of the complaint survive masking.
    assert "$15.98" in text
    assert "NW-2-5" in html


def test_at_most_five_examples() -> None:
    examples = [(f"zendesk:{i}", f"complaint number {i}") for i in range(9)]
    text, html, _ = parts(reparse(build(make_view(examples=examples))))
    assert "complaint number 4" in html
    assert "complaint number 5" not in html
    assert "complaint number 5" not in text


def test_html_is_phone_friendly() -> None:
    html = render_html(make_view(), chart_cid="x@y")
    assert '<meta name="viewport" content="width=device-width' in html
    assert re.search(r"max-width:\s*600px", html)
    assert "<style" not in html  # mail clients strip style blocks: inline only
    assert "<link" not in html


# --------------------------------------------------------------------------- hostile text


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp; "quoted" \'q\''


def test_script_in_customer_text_is_escaped() -> None:
    view = make_view(
        topic="<b>pricing</b>",
        change_title=f"Price {HOSTILE}",
        runner_up_title=HOSTILE,
        rising_terms=["<i>evil</i>"],
        examples=[("zendesk:<1>", HOSTILE)],
        sql_snippet="SELECT '</pre><script>x()</script>';",
    )
    text, html, _ = parts(reparse(build(view)))
    doc = collect(html)
    assert "script" not in doc.tags
    assert "b" not in doc.tags
    assert "i" not in doc.tags
    assert doc.tags.count("img") == 1  # only the chart
    assert doc.img_src[0].startswith("cid:")
    assert any('<script>alert("x")</script>' in t for t in doc.text)  # shown, as text
    # The plain-text part is not HTML: it shows the words as they were written.
    assert '<script>alert("x")</script>' in text
    assert "&lt;" not in text


@pytest.mark.parametrize("field", ["topic", "change_title", "alert_id", "notice_suffix", "channel"])
def test_line_breaks_cannot_inject_headers(field: str) -> None:
    evil = "pricing\r\nBcc: everyone@evil.test\r\n\r\n<html>"
    overrides: dict[str, Any] = {field: evil}
    if field == "notice_suffix":
        overrides = {"notice": "escalated:3" + evil}
    msg = build(make_view(**overrides))
    raw = msg.as_bytes()
    parsed = reparse(msg)
    assert parsed["Bcc"] is None
    assert b"\r\nBcc:" not in raw
    assert "\n" not in str(parsed["Subject"])
    assert parsed.get_content_type() == "multipart/related"
    assert not parsed.defects


def test_huge_body_is_truncated() -> None:
    huge = "Refund now! " * 1_100_000  # ~13 MB
    msg = build(make_view(examples=[("zendesk:9", huge)]))
    assert len(msg.as_bytes()) < 300_000
    text, html, _ = parts(reparse(msg))
    shown = next(line for line in text.splitlines() if "Refund now!" in line)
    assert 400 < len(shown.strip()) <= 510
    assert shown.rstrip().endswith("…")
    assert "…" in html


def test_right_to_left_and_emoji_survive() -> None:
    words = "السعر ارتفع كثيرا 😡 שלום 🙏🏽"
    view = make_view(examples=[("zendesk:7", words)], change_title="Prix ↑ 💸 زيادة")
    msg = reparse(build(view))
    text, html, _ = parts(msg)
    assert words in text
    assert words in html
    assert 'dir="auto"' in html
    assert "Prix ↑ 💸 زيادة" in str(msg["Subject"])


def test_bidi_override_is_removed_from_subject() -> None:
    view = make_view(change_title="Refund \u202egnp.exe")
    subject = str(reparse(build(view))["Subject"])
    assert "\u202e" not in subject
    assert "Refund gnp.exe" in subject


# --------------------------------------------------------------------------- chart


def test_chart_is_a_small_png_that_changes_with_the_data() -> None:
    png = render_chart_png(make_view())
    assert png.startswith(PNG_MAGIC)
    assert 2_000 < len(png) < 150_000
    flat = make_series(START).with_columns(pl.lit(11.0).alias("value"))
    assert render_chart_png(make_view(series=flat)) != png


def test_chart_marks_candidate_changes() -> None:
    with_changes = render_chart_png(make_view())
    without = render_chart_png(make_view(candidate_changes=[]))
    assert with_changes != without


@pytest.mark.parametrize(
    "series",
    [
        pl.DataFrame(
            schema={
                "ts": pl.Datetime("us", "UTC"),
                "value": pl.Float64,
                "expected": pl.Float64,
                "lower": pl.Float64,
                "upper": pl.Float64,
            }
        ),
        make_series(START).head(1),
        make_series(START).with_columns(pl.lit(None, pl.Float64).alias("lower")),
        make_series(START).with_columns(pl.col("ts").dt.replace_time_zone(None)),
        make_series(START).with_columns(pl.col("ts").dt.date()),
        make_series(START).select("ts", "value"),
    ],
    ids=["empty", "one-point", "no-band", "naive-ts", "dates", "no-expected-columns"],
)
def test_chart_copes_with_thin_series(series: pl.DataFrame) -> None:
    png = render_chart_png(make_view(series=series))
    assert png.startswith(PNG_MAGIC)


def test_chart_titles_with_dollar_signs_are_not_tex() -> None:
    view = make_view(candidate_changes=[("Plan $9 → $12 $\\frac{a}{", START, None)])
    assert render_chart_png(view).startswith(PNG_MAGIC)


def test_preview_html_embeds_the_chart() -> None:
    html = render_html(make_view(), chart_cid=None)
    (src,) = collect(html).img_src
    assert src.startswith("data:image/png;base64,iVBORw0KGgo")
    assert "<img" not in render_html(make_view(), chart_cid=None, inline_chart=False)


def test_view_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_view().topic = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- follow-ups


def test_subject_of_reminder_says_still_high_and_keeps_the_severity() -> None:
    view = make_view(notice="reminder:2", severity=3)
    assert subject_for(view).startswith("Still high: complaints about pricing 4.1× normal since")
    _, html, _ = parts(reparse(build(view)))
    assert "Still high: high" in html  # severity 3's name, not 'reminder:2' read as severity 2


def test_resolved_note_names_the_rollback_and_the_recovery_time() -> None:
    view = make_view(notice="resolved", recovery_hours=30.6, fix_title="Old prices back")
    assert subject_for(view).endswith("recovered 31 h after 'Old prices back')")
    text, html, _ = parts(reparse(build(view)))
    assert 'Recovered 31 h after "Old prices back".' in text
    assert "Old prices back</strong>" in html
    plain = make_view(notice="resolved", recovery_hours=12.0)
    assert subject_for(plain).endswith("recovered 12 h after the fix)")


# --------------------------------------------------------------------------- Slack payload


def _mrkdwn(payload: dict[str, Any]) -> list[str]:
    out = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [e["text"] for e in block.get("elements", [])]
    return out


def test_slack_payload_has_text_and_blocks_with_the_facts() -> None:
    from flows.alert_webhook import slack_payload

    payload = slack_payload(make_view())
    assert payload["text"] == subject_for(make_view())
    assert [b["type"] for b in payload["blocks"]][:2] == ["header", "section"]
    joined = "\n".join(_mrkdwn(payload))
    assert "*47* complaints vs *11.5* expected" in joined
    assert "35.5 more than usual (90% interval of the excess: 28 to 43)" in joined
    assert "Plan price rise" in joined
    assert "Runner-up: Dark mode removed" in joined
    json.dumps(payload)  # serialisable as is


def test_slack_payload_escapes_mentions_and_links_and_masks_pii() -> None:
    from flows.alert_webhook import slack_payload

    hostile = (
        "<!channel> refund me <https://evil.test/login|Refund portal> & call +44 20 7946 0958\n"
        "> fake quote from *backlash*"
    )
    payload = slack_payload(make_view(examples=[("zendesk:9", hostile)]))
    joined = "\n".join(_mrkdwn(payload))
    assert "<!channel>" not in joined
    assert "&lt;!channel&gt;" in joined
    assert "<https://evil.test" not in joined
    assert "7946 0958" not in joined
    examples = next(t for t in _mrkdwn(payload) if t.startswith("*In their words*"))
    # every line of customer text is inside the quote, even one that starts with '>'
    assert all(line.startswith(("> ", "_")) for line in examples.splitlines()[1:])


def test_slack_payload_respects_block_limits_with_huge_text() -> None:
    from flows.alert_webhook import slack_payload

    huge = "x" * 12_000_000
    payload = slack_payload(
        make_view(examples=[("k", huge)] * 5, change_title="T" * 500, topic="p" * 300)
    )
    header = payload["blocks"][0]["text"]["text"]
    assert len(header) <= 150
    assert all(len(t) <= 3000 for t in _mrkdwn(payload))
    assert len(payload["blocks"]) <= 50
    assert len(json.dumps(payload)) < 20_000
