"""The alert email leadership reads: one screen, a chart, the cause, the words.

Built with the stdlib ``email`` package (policy SMTP) rather than a mail helper
library because the structure matters to how clients show it: a
``multipart/related`` whose root is a ``multipart/alternative`` (text, then
HTML, the preferred last) and whose second part is the chart, referenced from
the HTML by Content-ID. Clients then show exactly one body with the chart
inline, not the text and the HTML one after the other with a loose PNG.

Everything customer-written is untrusted: the HTML template autoescapes, the
examples are masked (:func:`transforms.masking.mask_pii`) and truncated, and
text that reaches a header is stripped of line breaks and bidi controls first.
The message is a pure function of its inputs (``now`` and ``message_id`` are
given, MIME boundaries derive from the content), so a retried run writes the
byte-identical ``.eml`` and the outbox stays idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from transforms.masking import mask_pii

TEMPLATES = Path(__file__).parent / "templates"

EXAMPLE_CHARS = 500  # what a reader takes in on a phone; the rest is in the warehouse
MAX_EXAMPLES = 5
MAX_TERMS = 12
SUBJECT_TITLE_CHARS = 60
SEVERITY_NAMES = {1: "notice", 2: "warning", 3: "high", 4: "critical"}
SEVERITY_COLOURS = {1: "#4a6fa5", 2: "#c98a00", 3: "#d4570b", 4: "#b3001b"}

# Fixed English names: the email must not change with the server's locale.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Bidi embeddings/overrides/isolates: in a subject they can make
# "Refund for ‮gnp.exe" read as something else.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


@dataclass(frozen=True)
class AlertView:
    """Everything one email needs; built by the monitor flow from marts.anomalies."""

    alert_id: str
    notice: str  # 'new:<n>' | 'escalated:<n>' | 'reminder:<k>' | 'resolved'
    topic: str
    channel: str
    grain: str
    started_at: datetime
    detected_at: datetime
    observed: float
    expected: float
    excess: float
    lower: float | None
    upper: float | None
    ratio: float
    p_value: float
    severity: int
    status: str
    change_id: str | None
    change_title: str | None
    change_kind: str | None
    change_announced_at: datetime | None
    change_effective_at: datetime | None
    runner_up_title: str | None
    rising_terms: list[str]
    examples: list[tuple[str, str]]  # (ticket_key, customer text), NOT yet masked
    series: pl.DataFrame  # ts, value, expected, lower, upper
    candidate_changes: list[tuple[str, datetime | None, datetime | None]] = field(
        default_factory=list
    )  # title, announced, effective
    recovery_hours: float | None = None
    sql_snippet: str = ""
    fix_title: str | None = None  # the change that reverted the cause (a rollback), if any


# --------------------------------------------------------------------------- text helpers


def header_text(text: str, limit: int | None = None) -> str:
    """One line of untrusted text made safe for a header.

    Line breaks would be a header injection (policy.SMTP refuses them with an
    exception, which would lose the alert), other control and bidi characters
    can disguise the subject. Emoji and right-to-left letters are kept.
    """
    text = _BIDI_CONTROLS.sub("", text)
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def short_date(value: datetime) -> str:
    """'Tue 10 Mar' in UTC, locale-independent."""
    value = value.astimezone(UTC)
    return f"{_DAYS[value.weekday()]} {value.day} {_MONTHS[value.month - 1]}"


def long_datetime(value: datetime | None) -> str:
    if value is None:
        return "unknown"
    value = value.astimezone(UTC)
    return f"{short_date(value)} {value.year}, {value:%H:%M} UTC"


def ratio_text(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "far above"
    return f"{ratio:.1f}×"


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    whole = abs(value) >= 100 or value == round(value)
    return f"{value:,.0f}" if whole else f"{value:,.1f}"


def _p_value(value: float) -> str:
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _what(alert: AlertView) -> str:
    """'complaints about pricing (via email)' — the series in words."""
    topic = header_text(alert.topic, 40)
    what = "complaints" if topic in ("", "*") else f"complaints about {topic}"
    channel = header_text(alert.channel, 20)
    if channel not in ("", "*"):
        what += f" via {channel}"
    return what


def _notice_severity(notice: str, fallback: int) -> int:
    kind, _, level = notice.partition(":")
    # 'reminder:<k>' counts periods, not severity.
    return int(level) if kind in ("new", "escalated") and level.isdigit() else fallback


def subject_for(alert: AlertView) -> str:
    """The whole alert in one line: what, how much, since when, and why."""
    what = _what(alert)
    since = short_date(alert.started_at)
    if alert.notice == "resolved":
        cause = ""
        if alert.change_title:
            cause = f", after '{header_text(alert.change_title, SUBJECT_TITLE_CHARS)}'"
        recovery = ""
        if alert.recovery_hours is not None and math.isfinite(alert.recovery_hours):
            recovery = f"; recovered {alert.recovery_hours:.0f} h after the fix"
            if alert.fix_title:
                fix = header_text(alert.fix_title, SUBJECT_TITLE_CHARS)
                recovery = f"; recovered {alert.recovery_hours:.0f} h after '{fix}'"
        return f"Back to normal: {what} (spike since {since}{cause}{recovery})"
    head = f"{what[0].upper()}{what[1:]} {ratio_text(alert.ratio)} normal since {since}"
    if alert.notice.startswith("escalated"):
        level = _notice_severity(alert.notice, alert.severity)
        head = f"Worse ({SEVERITY_NAMES.get(level, level)}): {what} {ratio_text(alert.ratio)}"
        head += f" normal since {since}"
    elif alert.notice.startswith("reminder"):
        head = f"Still high: {what} {ratio_text(alert.ratio)} normal since {since}"
    if alert.change_title:
        title = header_text(alert.change_title, SUBJECT_TITLE_CHARS)
        when = alert.change_announced_at or alert.change_effective_at
        verb = "announced" if alert.change_announced_at else "effective"
        tail = f" — follows '{title}'" + (f" ({verb} {short_date(when)})" if when else "")
    else:
        tail = " — no product change found (check incidents)"
    return head + tail


def _examples(alert: AlertView) -> list[dict[str, Any]]:
    """Masked, truncated examples. Masking looks a little past the cut so a
    phone number straddling it is masked whole before being cut."""
    out = []
    for key, text in alert.examples[:MAX_EXAMPLES]:
        window = (text or "")[: EXAMPLE_CHARS + 100]
        masked = mask_pii(window)
        truncated = len(text or "") > EXAMPLE_CHARS
        body = masked[:EXAMPLE_CHARS].rstrip() + ("…" if truncated else "")
        out.append({"key": header_text(key, 80), "text": body, "truncated": truncated})
    return out


def _context(alert: AlertView, chart_src: str | None) -> dict[str, Any]:
    resolved = alert.notice == "resolved"
    interval = None
    if alert.lower is not None and alert.upper is not None:
        interval = f"{_number(alert.lower)} to {_number(alert.upper)}"
    changes = [
        {
            "title": header_text(title, 120),
            "announced": long_datetime(announced) if announced else None,
            "effective": long_datetime(effective) if effective else None,
        }
        for title, announced, effective in alert.candidate_changes
    ]
    severity = _notice_severity(alert.notice, alert.severity)
    return {
        "subject": subject_for(alert),
        "what": _what(alert),
        "resolved": resolved,
        "escalated": alert.notice.startswith("escalated"),
        "reminder": alert.notice.startswith("reminder"),
        "fix_title": header_text(alert.fix_title, 200) if alert.fix_title else None,
        "severity": severity,
        "severity_name": SEVERITY_NAMES.get(severity, str(severity)),
        "colour": "#2e7d32" if resolved else SEVERITY_COLOURS.get(severity, "#4a6fa5"),
        "ratio": ratio_text(alert.ratio),
        "observed": _number(alert.observed),
        "expected": _number(alert.expected),
        "excess": _number(alert.excess),
        "interval": interval,
        "p_value": _p_value(alert.p_value),
        "since": long_datetime(alert.started_at),
        "detected": long_datetime(alert.detected_at),
        "grain": "daily" if alert.grain == "day" else "hourly",
        "channel": header_text(alert.channel, 20) or "*",
        "change": (
            {
                "title": header_text(alert.change_title, 200),
                "kind": header_text(alert.change_kind or "", 40),
                "announced": long_datetime(alert.change_announced_at),
                "effective": long_datetime(alert.change_effective_at),
                "id": header_text(alert.change_id or "", 80),
            }
            if alert.change_title
            else None
        ),
        "runner_up": header_text(alert.runner_up_title, 200) if alert.runner_up_title else None,
        "candidates": changes,
        "terms": [header_text(mask_pii(t), 40) for t in alert.rising_terms[:MAX_TERMS]],
        "examples": _examples(alert),
        "recovery_hours": (
            f"{alert.recovery_hours:.0f}"
            if alert.recovery_hours is not None and math.isfinite(alert.recovery_hours)
            else None
        ),
        "sql": alert.sql_snippet,
        "alert_id": header_text(alert.alert_id, 120),
        "notice": header_text(alert.notice, 40),
        "chart_src": chart_src,
    }


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    # Autoescape by file name: on for HTML (customer text is untrusted), off
    # for the plain-text part, where escaping would show as &lt; literally.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        # Fail safe: only templates explicitly named *.txt.j2 render unescaped.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"),
            disabled_extensions=("txt", "txt.j2"),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(alert: AlertView, *, chart_cid: str | None, inline_chart: bool = True) -> str:
    """The HTML body. ``chart_cid`` points the image at the inline part of the
    email; without one the chart is embedded as a data URI, so a preview
    opened straight in a browser (``alerts --preview``) shows it too
    (``inline_chart=False``: no chart at all)."""
    src = None
    if chart_cid:
        src = f"cid:{chart_cid.strip('<>')}"
    elif inline_chart:
        src = "data:image/png;base64," + base64.b64encode(render_chart_png(alert)).decode()
    return _env().get_template("alert.html.j2").render(_context(alert, src))


def render_text(alert: AlertView) -> str:
    """The text/plain alternative: same facts, for clients that show no HTML."""
    return _env().get_template("alert.txt.j2").render(_context(alert, None))


# --------------------------------------------------------------------------- chart


def _like(when: datetime | None, ref: Any) -> Any:
    """``when`` in the same flavour as the series' timestamps (aware or naive
    UTC, or a date), so comparing them cannot raise."""
    if when is None:
        return None
    if not isinstance(ref, datetime):
        return when.astimezone(UTC).date() if when.tzinfo else when.date()
    if ref.tzinfo is None:
        return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def render_chart_png(alert: AlertView) -> bytes:
    """A small PNG of the series, its expected band, the spike and the changes.

    Uses the object API (Figure + Agg canvas), not pyplot: no global figure
    registry, so it is safe in worker threads and leaks nothing between alerts.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    # Sized for a phone: the image is shown ~360 CSS px wide there, so a font
    # of N points shows as N * 360 / (72 * width_in) px whatever the dpi. At 4
    # inches, 8 pt is ~10 px (at 6 inches it was 6 px: unreadable). 150 dpi
    # keeps it sharp on high-density screens and on a 568 px desktop column.
    fig = Figure(figsize=(4.0, 2.5), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    series = alert.series.sort("ts") if alert.series.height else alert.series
    if series.height == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        ts = series["ts"].to_list()
        # The band and the expectation are drawn when the detector gave them.
        col = {
            name: series[name].cast(pl.Float64).to_numpy()
            for name in ("value", "expected", "lower", "upper")
            if name in series.columns
        }
        if "lower" in col and "upper" in col:
            ax.fill_between(
                ts,
                col["lower"],
                col["upper"],
                color="#c9d6e3",
                alpha=0.8,
                lw=0,
                label="normal range",
            )
        if "expected" in col:
            ax.plot(ts, col["expected"], ls="--", lw=1, color="#5b6f82", label="expected")
        ax.plot(ts, col["value"], lw=1.6, color="#1f3b57", marker="o", ms=2.5, label="complaints")
        start = _like(alert.started_at, ts[0])
        # The spike: buckets since it started that are above the normal range
        # (all of them when there is no range), shaded up to the last one, so
        # a resolved alert shows where it ended.
        above = col.get("upper")
        spike = [
            i
            for i, t in enumerate(ts)
            if t >= start and (above is None or not col["value"][i] <= above[i])
        ]
        if spike:
            ax.axvspan(ts[spike[0]], ts[spike[-1]], color="#d4570b", alpha=0.10, lw=0)
            ax.plot(
                [ts[i] for i in spike],
                [col["value"][i] for i in spike],
                ls="none",
                marker="o",
                ms=4,
                color="#d4570b",
                label="spike",
            )
        first, last = ts[0], ts[-1]
        for n, (title, announced, effective) in enumerate(alert.candidate_changes[:4]):
            label = header_text(title, 28)
            announced, effective = _like(announced, first), _like(effective, first)
            for when, style in ((announced, ":"), (effective, "-")):
                if when is None or not (first <= when <= last):
                    continue
                ax.axvline(when, color="#8a4b00", ls=style, lw=1)
            anchor = announced or effective
            if anchor is not None and first <= anchor <= last:
                ax.text(
                    anchor,
                    0.97 - 0.1 * n,
                    f" {label}",
                    transform=ax.get_xaxis_transform(),
                    fontsize=7.5,
                    color="#8a4b00",
                    va="top",
                    parse_math=False,  # '$' in a title is a price, not TeX
                )
        locator = AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        # Headroom above the data for the change labels along the top.
        peaks = [float(np.nanmax(v)) for v in col.values() if np.isfinite(v).any()]
        ax.set_ylim(0, max([*peaks, 1.0]) * 1.35)
        ax.set_ylabel("complaints / " + ("day" if alert.grain == "day" else "hour"), fontsize=8)
        ax.tick_params(labelsize=8)
        fig.legend(
            fontsize=7.5,
            loc="outside lower center",
            frameon=False,
            ncols=4,
            handlelength=1.2,
            handletextpad=0.4,
            columnspacing=0.9,
        )
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a glyph missing from the font
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# --------------------------------------------------------------------------- message


def _boundary(message_id: str, tag: str, *parts: str) -> str:
    # Derived from the content it encloses, so customer text cannot contain it
    # (it would have to contain its own hash) and the message is reproducible.
    digest = hashlib.sha256("\0".join((message_id, tag, *parts)).encode()).hexdigest()
    return f"=_backlash_{tag}_{digest[:32]}"


def compose(
    alert: AlertView,
    *,
    sender: str,
    to: list[str],
    cc: list[str] | None = None,
    message_id: str,
    now: datetime,
) -> EmailMessage:
    """The complete alert message, ready for the outbox or SMTP.

    ``message_id`` is stable per (alert, notice): recorded before sending in
    meta.alert_deliveries, it lets clients and the flow recognise a resend.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not to:
        raise ValueError("an alert needs at least one recipient")
    msgid = message_id if message_id.startswith("<") else f"<{message_id}>"
    digest = hashlib.sha256(f"{alert.alert_id}\0{alert.notice}".encode()).hexdigest()[:24]
    cid = f"chart.{digest}@backlash"

    text = render_text(alert)
    html = render_html(alert, chart_cid=cid)
    png = render_chart_png(alert)

    alternative = MIMEPart(policy=policy.SMTP)
    alternative.set_content(text, subtype="plain", charset="utf-8")
    alternative.add_alternative(html, subtype="html", charset="utf-8")
    alternative.set_boundary(_boundary(msgid, "alt", text, html))

    msg = EmailMessage(policy=policy.SMTP)
    msg["Subject"] = subject_for(alert)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = msgid
    # RFC 3834: vacation responders and ticket systems must not answer an alert.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Backlash-Alert-Id"] = header_text(alert.alert_id, 120)
    msg["X-Backlash-Notice"] = header_text(alert.notice, 40)
    msg.make_related(boundary=_boundary(msgid, "rel", text, html))
    msg.set_param("type", "multipart/alternative")  # RFC 2387: the root part's type
    msg.attach(alternative)
    image = MIMEPart(policy=policy.SMTP)
    image.set_content(
        png, "image", "png", cid=f"<{cid}>", filename="chart.png", disposition="inline"
    )
    msg.attach(image)
    msg["MIME-Version"] = "1.0"
    return msg
