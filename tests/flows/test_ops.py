"""The daily digest and the operators' failure note, composed from plain data."""

from __future__ import annotations

from datetime import UTC, datetime

from flows.ops import compose_digest, compose_failure

NOW = datetime(2026, 6, 16, 8, tzinfo=UTC)


def test_digest_lists_anomalies_new_words_and_escapes_customer_terms() -> None:
    content = {
        "anomalies": [
            {
                "alert_id": "a1",
                "topic": "dvd",
                "channel": "*",
                "started_at": datetime(2026, 6, 15, tzinfo=UTC),
                "observed": 120.0,
                "expected": 30.0,
                "ratio": 4.0,
                "severity": 4,
                "status": "ongoing",
                "change_id": "dvd-split",
                "change_title": "DVD service becomes Qwikster",
            }
        ],
        "complaints": [{"topic": "*", "complaints": 150, "tickets": 400}],
        "emerging": [
            {"topic": "qwikster", "terms": ["qwikster", "<script>x</script>"], "tickets": 34}
        ],
    }
    msg = compose_digest(
        content, sender="b@example.com", to=["d@example.com"], now=NOW, message_id="<d@x>"
    )
    assert msg["Subject"] == "backlash daily digest Tue 16 Jun: 1 open, 1 in the last day"
    text = msg.get_body(("plain",)).get_content()
    assert "follows DVD service becomes Qwikster" in text
    assert "qwikster: 34 complaints" in text
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "DVD service becomes Qwikster" in html


def test_failure_note_has_one_line_subject_and_masks_personal_data() -> None:
    msg = compose_failure(
        flow_name="ingest",
        run_name="brave-otter",
        message="boom\r\nBcc: everyone@example.com\nwhile reading jane.doe@example.com",
        sender="b@example.com",
        to=["ops@example.com"],
        now=NOW,
    )
    assert "\n" not in msg["Subject"]
    assert msg["Bcc"] is None
    assert "jane.doe@example.com" not in msg["Subject"]
    body = msg.get_body(("plain",)).get_content()
    assert "jane.doe@example.com" not in body
    assert "brave-otter" in body
