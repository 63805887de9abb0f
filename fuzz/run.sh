#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each one briefly on a scratch copy of its seed corpus
# (fuzz/corpus/<target>); fails if any target crashes, panics, leaks or times out. CI calls this
# (.ci/run); see fuzz/README.md for longer runs by hand.
#
#   FUZZ_SECONDS=10           seconds per target (default 10; 11 targets)
#   FUZZ_SANITIZER=address    cargo fuzz's sanitizer (default address; CI uses none: the
#                             workspace forbids unsafe code, and a build without ASan is much
#                             faster from a cold cache)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-10}
sanitizer=${FUZZ_SANITIZER:-address}

log() { printf '\n==> %s\n' "$*"; }

if ! cargo +nightly --version >/dev/null 2>&1; then
  log "installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Release with debug assertions and overflow checks.
flags=(-O -a --sanitizer "$sanitizer")

log "building the fuzz targets ($(cargo fuzz --version))"
start=$SECONDS
cargo +nightly fuzz build "${flags[@]}"
echo "built in $((SECONDS - start)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
  log "fuzzing $target for ${seconds} s"
  # New inputs go to the scratch directory (the first one), never into the repository.
  mkdir -p "$scratch/$target"
  if ! cargo +nightly fuzz run "${flags[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1; then
    cat "$scratch/$target.log" >&2
    failed+=("$target")
    continue
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/$target.log" || true
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz targets failed: ${failed[*]} (crashing inputs are in fuzz/artifacts/<target>/)" >&2
  exit 1
fi
echo "all fuzz targets ran for ${seconds} s each without a crash"
