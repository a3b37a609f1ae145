#!/bin/sh
# Check that a stationd node answers: prints OK and exits 0, or exits non-zero.
# Usage: scripts/heartbeat.sh [URL]   (default $STATIOND_URL, else https://127.0.0.1:8443)
# $STATIOND_CA names the CA file (e.g. var/tls/cert.pem for a self-signed node).
set -eu
url=${1:-${STATIOND_URL:-https://127.0.0.1:8443}}
if [ -n "${STATIOND_CA:-}" ]; then
    exec curl --fail --silent --show-error --max-time 10 --cacert "$STATIOND_CA" "$url/heartbeat"
fi
exec curl --fail --silent --show-error --max-time 10 "$url/heartbeat"
