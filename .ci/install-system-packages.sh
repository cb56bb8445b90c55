#!/usr/bin/env bash
# Debian packages for the real-server tests: Dovecot (IMAP) and OpenSSL (test certificates).
set -euo pipefail
need=()
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The package starts a system Dovecot on the standard ports; the tests run
  # their own instance on a free loopback port instead.
  (service dovecot stop || systemctl stop dovecot || true) >/dev/null 2>&1
fi
