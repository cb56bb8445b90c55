"""The alert HTML in a real browser at phone width: Debian's headless Chromium.

Parsing the HTML proves structure; only a browser proves leadership sees
something on a phone: the chart decoded and drawn, the severity band in its
colour, nothing wider than the screen. Skipped (with the reason) where no
Chromium is installed: ``apt-get install -y chromium``.

Measured trap: headless Chromium 156 never makes its window narrower than
500 px; ``--window-size=390,...`` silently lays the page out at 500 and crops
the screenshot to 390, so a page too wide for a phone would pass. The alert
is therefore rendered in a 390 px wide iframe (``srcdoc``: same origin, so the
probe can measure it), which is exactly a 390 px viewport.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from html import escape as html_escape
from pathlib import Path

import pytest

from flows.alert_email import SEVERITY_COLOURS, render_html
from tests.flows.test_alert_email import make_view

PHONE_WIDTH = 390  # CSS px: an iPhone 12-15 in portrait
PAGE_HEIGHT = 2600
WINDOW = f"--window-size=500,{PAGE_HEIGHT}"  # Chromium's minimum width; the frame is 390
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((found for name in BINARIES if (found := shutil.which(name))), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium binary (chromium, chromium-browser, google-chrome) on PATH; "
        "install Debian's: apt-get install -y chromium",
    ),
]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # root in CI containers; the page is our own file
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--no-first-run",
            f"--user-data-dir={tmp / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def hostile_demo_html() -> str:
    """The demo's pricing alert, with the customer text a real inbox brings."""
    view = make_view(
        examples=[
            ("zendesk:101", "I paid $15.98 and now $19.99?! Mail me at jane.roe@example.com"),
            ("zendesk:102", "<script>document.body.innerHTML=''</script> " + "ü" * 300),
            ("imap:abc", "السعر ارتفع كثيرا 😡 " + "averyveryverylongwordwithoutspaces" * 20),
        ]
    )
    return render_html(view, chart_cid=None)  # chart embedded as a data URI


PROBE = """<script>
const frame = document.getElementById('phone');
frame.addEventListener('load', () => {
  const doc = frame.contentDocument;
  document.body.setAttribute('data-viewport', frame.contentWindow.innerWidth);
  document.body.setAttribute('data-width', doc.documentElement.scrollWidth);
  document.body.setAttribute('data-height', Math.ceil(doc.body.getBoundingClientRect().bottom));
  document.body.setAttribute('data-text', doc.body.innerText.length);
});
</script>"""


def phone_page(alert_html: str) -> str:
    """A page holding the alert in a phone-wide frame, top left, nothing else."""
    return (
        '<!DOCTYPE html><html><body style="margin:0;background:#fff">'
        f'<iframe id="phone" srcdoc="{html_escape(alert_html, quote=True)}" '
        f'style="display:block;border:0;width:{PHONE_WIDTH}px;height:{PAGE_HEIGHT}px">'
        f"</iframe>{PROBE}</body></html>"
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("render")
    html = tmp / "phone.html"
    html.write_text(phone_page(hostile_demo_html()), encoding="utf-8")
    return html


def test_screenshot_at_phone_width_is_not_blank(page: Path) -> None:
    from PIL import Image

    shot = page.with_name("alert.png")  # kept in the pytest temp dir to look at
    started = time.perf_counter()
    result = chromium(page.parent, WINDOW, f"--screenshot={shot}", page.as_uri())
    elapsed = time.perf_counter() - started
    assert shot.is_file(), result.stderr[-2000:]
    full = Image.open(shot).convert("RGB")
    image = full.crop((0, 0, PHONE_WIDTH, full.height))  # the phone frame
    outside = full.crop((PHONE_WIDTH, 0, full.width, full.height))
    assert set(outside.get_flattened_data()) == {(255, 255, 255)}  # nothing spilled out
    pixels = list(image.get_flattened_data())
    colours = set(pixels)
    ink = sum(1 for r, g, b in pixels if min(r, g, b) < 200) / len(pixels)
    print(f"render: {len(colours)} colours, {ink:.1%} ink, chromium {elapsed:.1f} s")
    assert len(colours) > 200  # text antialiasing, the chart, the band: not a blank page
    assert ink > 0.03

    def near(hex_colour: str, tolerance: int = 12) -> int:
        target = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        return sum(
            1
            for p in pixels
            if all(abs(c - t) <= tolerance for c, t in zip(p, target, strict=True))
        )

    assert near(SEVERITY_COLOURS[3]) > 50  # the severity band beside the headline
    assert near("#1f3b57") > 30  # the complaints line of the chart: the PNG decoded and drew


def test_nothing_is_wider_than_the_phone(page: Path) -> None:
    """A layout wider than the screen means sideways scrolling on a phone."""
    result = chromium(
        page.parent, WINDOW, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()
    )
    found = dict(re.findall(r'data-(viewport|width|height|text)="(\d+)"', result.stdout))
    assert set(found) == {"viewport", "width", "height", "text"}, result.stderr[-2000:]
    print(f"render: {found}")
    assert int(found["viewport"]) == PHONE_WIDTH
    assert int(found["width"]) <= PHONE_WIDTH
    assert int(found["height"]) <= PAGE_HEIGHT  # the screenshot saw all of it
    # The customer's <script> stayed text: had it run, the body would be empty.
    assert int(found["text"]) > 1000
