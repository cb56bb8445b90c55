#!/usr/bin/env bash
# Dovecot (IMAP), OpenSSL and Chromium for the real-server tests (IMAP, TLS, the render check).
# Non-interactive, idempotent; needs root and apt. The tests start their own Dovecot
# on a free loopback port with a config in a temp dir, so the system service that the
# package starts is stopped and disabled again.
set -euo pipefail
need=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# headless Chromium renders an alert at phone width in tests/flows/test_render.py
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
(service dovecot stop || systemctl disable --now dovecot || true) >/dev/null 2>&1
