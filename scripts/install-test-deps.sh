#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain. Idempotent.
#  - aiosmtpd for /usr/bin/python3 (Debian's python3-aiosmtpd): the real SMTP
#    relay the alert tests (tests/alerts.rs, tests/smtp/relay.py) talk to.
#  - promtool (Debian's prometheus): tests/promtool.rs checks /metrics with it,
#    tests/systemd_unit.rs the shipped Prometheus rules.
#  - systemd-analyze (Debian's systemd): tests/systemd_unit.rs checks the unit.
#  - keepalived, curl and ip (iproute2): tests/netns.rs runs two fulcrum nodes
#    sharing a virtual IP with the shipped deploy/keepalived files, in network
#    namespaces of its own.
set -euo pipefail

# apt_need <command> <package>: installs <package> when <command> is missing.
apt_need() {
    if command -v "$1" >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: $1 is missing; run as root: sudo $0 (apt-get install -y $2)" >&2
        exit 1
    fi
    echo "install-test-deps: installing $2 (for $1)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "$2" >/dev/null || { apt-get update && apt-get install -y "$2" >/dev/null; }
}
apt_need ip iproute2
apt_need curl curl
apt_need keepalived keepalived

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: systemd-analyze is missing; run as root: sudo $0 (apt-get install -y systemd)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y systemd >/dev/null || { apt-get update && apt-get install -y systemd >/dev/null; }
fi

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: promtool is missing; run as root: sudo $0 (apt-get install -y prometheus)" >&2
        exit 1
    fi
    echo "install-test-deps: installing prometheus (for promtool)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y prometheus >/dev/null || { apt-get update && apt-get install -y prometheus >/dev/null; }
fi

if /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null; then
    echo "install-test-deps: aiosmtpd is installed for /usr/bin/python3"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: aiosmtpd is missing for /usr/bin/python3; the alert tests need it." >&2
    echo "install-test-deps: run as root: sudo $0   (it runs: apt-get install -y python3-aiosmtpd)" >&2
    exit 1
fi
echo "install-test-deps: installing python3-aiosmtpd"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y python3-aiosmtpd || { apt-get update && apt-get install -y python3-aiosmtpd; }
/usr/bin/python3 -c 'import aiosmtpd' && echo "install-test-deps: aiosmtpd is installed"
