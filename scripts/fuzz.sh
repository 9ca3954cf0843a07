#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of everything that reads untrusted
# bytes; see docs/testing.md. Runs every target in fuzz/fuzz_targets/ (or the ones
# named as arguments) for FUZZ_SECONDS (default 20) each, on stable with no sanitizer,
# starting from the committed corpus copied into a scratch directory so that the tree
# stays clean. Exits non-zero if any target crashed, hung or ran out of memory,
# printing the input's path; keep it as fuzz/regressions/<target>/<name> (and fix
# the bug).
#
#   scripts/fuzz.sh                      every target, 20 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh config rule_table
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
cargo_fuzz_version="0.13.2"

if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version" >&2
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
  done
fi

# -s none: no sanitizer, so stable Rust will do (ASan needs nightly). Built once for
# all targets, in release with debug assertions (cargo-fuzz's default).
cargo fuzz build -s none
scratch="$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

status=0
for t in "${targets[@]}"; do
  corpus="$scratch/corpus/$t"
  artifacts="$scratch/artifacts/$t/"
  mkdir -p "$corpus" "$artifacts"
  cp fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  cp fuzz/regressions/"$t"/* "$corpus"/ 2>/dev/null || true
  log="$scratch/$t.log"
  echo "fuzz: $t for ${seconds}s" >&2
  # -timeout: one input taking over 10 s is a hang. -rss_limit_mb: memory per process.
  # stdin from /dev/null: nothing under test may wait on it.
  if ! cargo fuzz run -s none "$t" "$corpus" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts" -print_final_stats=1 </dev/null >"$log" 2>&1 \
      || ls "$artifacts" | grep -q .; then
    status=1
    tail -n 40 "$log" >&2
    keep="fuzz/artifacts/$t"
    mkdir -p "$keep"
    for a in "$artifacts"*; do
      [ -e "$a" ] || continue
      cp "$a" "$keep/"
      echo "fuzz: $t: CRASH: $keep/$(basename "$a")" >&2
    done
    continue
  fi
  # The numbers: executions, speed, coverage (edges), features, corpus size.
  stat_of() { grep -o "$1: *[0-9]*" "$log" | tail -n 1 | awk '{ print $2 }' || true; }
  runs="$(stat_of number_of_executed_units)"
  speed="$(stat_of average_exec_per_sec)"
  done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
  cov="$(grep -o 'cov: [0-9]*' <<<"$done_line" | awk '{ print $2 }' || true)"
  ft="$(grep -o 'ft: [0-9]*' <<<"$done_line" | awk '{ print $2 }' || true)"
  corp="$(grep -o 'corp: [0-9]*' <<<"$done_line" | awk '{ print $2 }' || true)"
  echo "fuzz: $t: ok: ${runs:-?} runs (${speed:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}" >&2
done
exit "$status"
