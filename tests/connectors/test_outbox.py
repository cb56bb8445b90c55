"""The outbox: atomic, idempotent, safely named .eml files."""

from __future__ import annotations

import threading
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from connectors.outbox import safe_name, write_eml


def message(body: str, subject: str = "Complaints about pricing 4.1× normal") -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["Subject"] = subject
    msg["From"] = "alerts@acme.test"
    msg["To"] = "ceo@acme.test"
    msg["Message-ID"] = "<a.new@backlash.invalid>"
    msg.set_content(body)
    return msg


def test_written_file_parses_back_to_the_message(tmp_path: Path) -> None:
    msg = message("Prices up, customers upset. 😡")
    path = write_eml(tmp_path / "outbox", msg, name="pricing-new")
    assert path.parent == tmp_path / "outbox"
    assert path.suffix == ".eml"
    assert path.read_bytes() == msg.as_bytes()
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert parsed["Subject"] == "Complaints about pricing 4.1× normal"
    assert parsed.get_content().strip() == "Prices up, customers upset. 😡"


def test_same_name_overwrites_with_same_content(tmp_path: Path) -> None:
    first = write_eml(tmp_path, message("one"), name="pricing|*|day|2026-03-10-new")
    second = write_eml(tmp_path, message("one"), name="pricing|*|day|2026-03-10-new")
    assert first == second
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]
    assert first.read_bytes() == message("one").as_bytes()


def test_different_notices_get_different_files(tmp_path: Path) -> None:
    a = write_eml(tmp_path, message("a"), name="pricing|*|day|2026-03-10-new")
    b = write_eml(tmp_path, message("b"), name="pricing|*|day|2026-03-10-escalated-3")
    c = write_eml(tmp_path, message("c"), name="pricing/*/day/2026-03-10-new")  # same slug as a
    assert len({a, b, c}) == 3
    assert len(list(tmp_path.iterdir())) == 3


def test_hostile_names_stay_inside_the_outbox(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    for name in ["../../etc/passwd", "/abs/path", "..", "", "a\x00b\r\nc", "é" * 400, "CON"]:
        path = write_eml(outbox, message("x"), name=name)
        assert path.parent == outbox
        assert path.resolve().is_relative_to(outbox.resolve())
        assert len(path.name.encode()) <= 255
    assert not (tmp_path / "etc").exists()


def test_safe_name_keeps_plain_names() -> None:
    assert safe_name("pricing-day-2026-03-10-new") == "pricing-day-2026-03-10-new"
    assert safe_name("pricing|*|day") != safe_name("pricing/*/day")
    assert set(safe_name("a b:c|d*é")) <= set("abcdefghijklmnopqrstuvwxyz0123456789-._")


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    """A reader polling the outbox while alerts are rewritten sees whole messages only."""
    bodies = ["A" * 400_000, "B" * 600_000]
    versions = [message(body).as_bytes() for body in bodies]
    target = write_eml(tmp_path, message(bodies[0]), name="big")
    stop = threading.Event()
    bad: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            if data not in versions:
                bad.append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(20):
            write_eml(tmp_path, message(bodies[i % 2]), name="big")
    finally:
        stop.set()
        thread.join()
    assert bad == []
    assert [p.name for p in tmp_path.iterdir()] == ["big.eml"]  # no temp files left


def test_file_mode_follows_the_umask(tmp_path: Path) -> None:
    """Readable like any file the user writes (mkstemp's 0600 would survive the rename)."""
    import os

    old = os.umask(0o022)
    try:
        path = write_eml(tmp_path, message("x"), name="mode")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
