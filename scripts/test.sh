#!/usr/bin/env bash
# The whole test suite. Anything the tests need beyond the Rust toolchain is
# installed from here (scripts/install-test-deps.sh: aiosmtpd for the alert tests).
# Ends with one summary line over every test binary: "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --doc 2>&1 | tee -a "$log" || status=1
cargo test --locked --all-targets 2>&1 | tee -a "$log" || status=1
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
