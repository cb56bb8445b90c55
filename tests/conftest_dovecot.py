"""A real Dovecot IMAP server for tests: its own config, port, users and Maildir in a tmp dir.

No system service is touched: Dovecot runs in the foreground from a config file
written here (plain IMAP on one port, implicit TLS on another, STARTTLS on the
plain one, with a self-signed certificate made by ``openssl`` at test time),
and is terminated afterwards. Mail is delivered with IMAP APPEND, as a mail
client would. Without ``dovecot`` installed (``.ci/install-dovecot.sh``) the
tests that need it are skipped, with the reason.

Import it from tests/conftest.py: ``from tests.conftest_dovecot import dovecot  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import imaplib
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOVECOT = shutil.which("dovecot") or (
    "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, deadline: float = 10) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited ({proc.returncode}): {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"dovecot did not listen on {port}: {_tail(log)}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


@dataclass
class Dovecot:
    """A running throwaway Dovecot; ``user``/``password`` log in, ``append`` delivers mail."""

    root: Path
    port: int
    ssl_port: int
    user: str = "support@example.test"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None

    @property
    def cafile(self) -> Path:
        return self.root / "cert.pem"

    @property
    def log(self) -> Path:
        return self.root / "dovecot.log"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))

    # -- lifecycle -------------------------------------------------------------

    def write_config(self) -> Path:
        root = self.root
        (root / "run").mkdir(exist_ok=True)
        (root / "state").mkdir(exist_ok=True)
        home = root / "home"
        home.mkdir(exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(root / "key.pem"), "-out", str(self.cafile)],
            check=True, capture_output=True,
        )  # fmt: skip
        (root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        if os.geteuid() == 0:
            # Dovecot refuses mail access as UID 0: the mail user is Dovecot's own.
            mail_user = pwd.getpwnam("dovecot")
            login_user, internal_user = "dovenull", "dovecot"
            for path in (home, root / "state"):
                os.chown(path, mail_user.pw_uid, mail_user.pw_gid)
            os.chmod(root, 0o755)
        else:
            mail_user = pwd.getpwnam(getpass.getuser())
            login_user = internal_user = mail_user.pw_name
        conf = root / "dovecot.conf"
        conf.write_text(
            f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {self.log}
info_log_path = {self.log}
ssl = yes
ssl_cert = <{self.cafile}
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {grp.getgrgid(pwd.getpwnam(internal_user).pw_gid).gr_name}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={home}/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = {self.ssl_port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
        )
        if os.geteuid() == 0:
            os.chmod(root / "key.pem", 0o644)  # read by the login process (throwaway key)
        return conf

    def start(self) -> None:
        assert DOVECOT is not None
        conf = self.root / "dovecot.conf"
        if not conf.exists():
            conf = self.write_config()
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.port, self.proc, self.log)
        _wait_for_port(self.ssl_port, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    # -- a mail client's view --------------------------------------------------

    @contextlib.contextmanager
    def client(self) -> Iterator[imaplib.IMAP4]:
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        conn.login(self.user, self.password)
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def append(self, raw: bytes, *, folder: str = "INBOX", flags: str = "") -> None:
        with self.client() as conn:
            if folder != "INBOX":
                conn.create(folder)  # "already exists" is fine
            typ, data = conn.append(folder, f"({flags})" if flags else None, None, raw)
            assert typ == "OK", data

    def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags, read with EXAMINE so looking does not change them."""
        with self.client() as conn:
            conn.select(folder, readonly=True)
            typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS)")
            assert typ == "OK", data
        result: dict[int, set[str]] = {}
        for line in data:
            if not isinstance(line, bytes):
                continue
            text = line.decode()
            uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
            # \\Recent belongs to a session, not to the message.
            result[uid] = set(text.split("FLAGS (")[1].split(")")[0].split()) - {"\\Recent"}
        return result

    def recreate(self, folder: str) -> None:
        """Delete and create ``folder``: the server gives it a new UIDVALIDITY."""
        with self.client() as conn:
            conn.delete(folder)
        time.sleep(1.1)  # UIDVALIDITY is time-based: make sure the second changes
        with self.client() as conn:
            conn.create(folder)


@contextlib.contextmanager
def running_dovecot() -> Iterator[Dovecot]:
    """Start a throwaway Dovecot, yield it, stop it and remove its files; skip if not installed."""
    if DOVECOT is None:
        pytest.skip("dovecot is not installed: run .ci/install-dovecot.sh (dovecot-imapd)")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: needed for the test server's certificate")
    # Not under pytest's tmp dir: that is private to us (0700), and as root the
    # server's own users must reach the Maildir.
    root = Path(tempfile.mkdtemp(prefix="backlash-dovecot-"))
    server = Dovecot(root=root, port=_free_port(), ssl_port=_free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A fresh Dovecot per test (about 0.3 s to start, 1 s to stop), stopped afterwards."""
    with running_dovecot() as server:
        yield server
