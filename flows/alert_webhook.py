"""The alert as Slack-compatible JSON: ``text`` (the notification line) plus ``blocks``.

A pure function of the :class:`~flows.alert_email.AlertView`, like the email,
so a retried run posts the same payload. Customer text is untrusted here too:
in Slack's mrkdwn ``<!channel>`` pings everyone and ``<https://evil|Refund>``
is a disguised link, so ``&``, ``<`` and ``>`` are escaped as Slack documents
(the only three it interprets), personal data is masked as in the email, and
every field is cut to Slack's limits (a block over them makes Slack refuse the
whole message with a 400).
"""

from __future__ import annotations

from typing import Any

from flows.alert_email import (
    AlertView,
    _context,
    header_text,
    subject_for,
)

HEADER_CHARS = 150  # Slack: header block plain_text limit
SECTION_CHARS = 3000  # Slack: section text limit
EXAMPLE_CHARS = 280  # a chat message is shorter than an email
MAX_EXAMPLES = 3


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_CHARS)}}


def slack_payload(alert: AlertView) -> dict[str, Any]:
    """``{"text": subject, "blocks": [...]}`` for an incoming webhook."""
    ctx = _context(alert, None)
    subject = subject_for(alert)
    esc = slack_escape
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(subject, HEADER_CHARS), "emoji": True},
        }
    ]
    facts = (
        f"*{esc(ctx['observed'])}* complaints vs *{esc(ctx['expected'])}* expected: "
        f"{esc(ctx['excess'])} more than usual"
        + (f" (90% interval of the excess: {esc(ctx['interval'])})" if ctx["interval"] else "")
        + f", since {esc(ctx['since'])}. Severity: *{esc(ctx['severity_name'])}*."
    )
    if ctx["resolved"] and ctx["recovery_hours"]:
        after = f"*{esc(ctx['fix_title'])}*" if ctx["fix_title"] else "the fix"
        facts += f"\nRecovered {esc(ctx['recovery_hours'])} h after {after}."
    blocks.append(_section(facts))
    if ctx["change"]:
        cause = (
            f"*Likely cause:* {esc(ctx['change']['title'])}"
            f" (announced {esc(ctx['change']['announced'])})"
        )
        if ctx["runner_up"]:
            cause += f"\nRunner-up: {esc(ctx['runner_up'])}"
    else:
        cause = "*Likely cause:* no product change found in the window (check incidents)."
    blocks.append(_section(cause))
    if ctx["terms"]:
        blocks.append(_section("*Rising words:* " + ", ".join(esc(t) for t in ctx["terms"])))
    examples = ctx["examples"][:MAX_EXAMPLES]
    if examples:
        # Quoted line by line ("> " is mrkdwn for a quote): a line break in
        # customer text cannot end the quote and pose as our own text.
        quoted = [
            "\n".join("> " + esc(line) for line in _cut(e["text"], EXAMPLE_CHARS).splitlines())
            + f"\n_{esc(e['key'])}_"
            for e in examples
        ]
        blocks.append(_section("*In their words* (contact details masked)\n" + "\n".join(quoted)))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _cut(
                        f"backlash alert {esc(header_text(alert.alert_id, 120))}"
                        f" ({esc(ctx['notice'])})",
                        SECTION_CHARS,
                    ),
                }
            ],
        }
    )
    return {"text": _cut(esc(subject), SECTION_CHARS), "blocks": blocks}
