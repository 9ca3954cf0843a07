#!/usr/bin/env bash
# The whole test suite. Anything the tests need beyond the Rust toolchain is
# installed from here (scripts/install-test-deps.sh: aiosmtpd for the alert tests).
# Then every fuzz target runs FUZZ_SECONDS (default 20) through scripts/fuzz.sh
# (FULCRUM_SKIP_FUZZ=1 leaves it out for a quick local run). Long runs:
# FUZZ_SECONDS, FULCRUM_SOAK_SECS (docs/testing.md).
# Ends with one summary line over every test binary: "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --doc 2>&1 | tee -a "$log" || status=1
cargo test --locked --no-fail-fast --all-targets 2>&1 | tee -a "$log" || status=1
if [ "${FULCRUM_SKIP_FUZZ:-}" = 1 ]; then
  echo "fuzz: skipped (FULCRUM_SKIP_FUZZ=1)"
elif bash scripts/fuzz.sh; then
  echo "fuzz: every target ran ${FUZZ_SECONDS:-20}s without a crash"
else
  echo "fuzz: FAILED (see above)"
  status=1
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
