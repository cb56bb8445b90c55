"""The outbox: every alert as an ``.eml`` file, the delivery that always works.

With no SMTP server configured the outbox *is* the delivery; with one, it is
the record of exactly what was sent. Files are written to a temporary name in
the same folder and renamed into place (``os.replace`` is atomic on one file
system), so a crash or a reader scanning the folder never sees half a message.
The name is derived from the alert id and notice, so a retried run overwrites
the same file with the same bytes instead of adding a second copy.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import uuid
from email.message import EmailMessage
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 120  # well under the 255-byte limit of common file systems


def safe_name(name: str) -> str:
    """A portable file stem for ``name``.

    Alert ids hold ``|``, ``:``, ``*`` and topic text, which are invalid or
    awkward on some file systems. Slugging alone could map two different
    names to the same file, so when it had to change anything a short hash of
    the original is appended: distinct names stay distinct files.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _UNSAFE.sub("-", ascii_name).strip("-._")[:MAX_STEM] or "alert"
    if slug != name:
        slug += "-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return slug


def write_eml(outbox: Path, msg: EmailMessage, *, name: str) -> Path:
    """Write ``msg`` as ``<outbox>/<safe name>.eml`` atomically; return the path."""
    outbox = Path(outbox)
    outbox.mkdir(parents=True, exist_ok=True)
    target = outbox / f"{safe_name(name)}.eml"
    data = msg.as_bytes()
    # Not mkstemp: its 0600 mode would survive the rename. O_EXCL with 0666
    # lets the umask decide, like any other file the user writes.
    # Named *.tmp so a folder scan for *.eml never picks up a half-written file.
    tmp = outbox / f".{target.stem}-{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
