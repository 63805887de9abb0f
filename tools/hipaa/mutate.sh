#!/usr/bin/env bash
# Removes HIPAA controls one at a time and requires the test docs/hipaa.md names for each to fail.
#
# For every control in the table below:
#   1. baseline: the test runs once on the unmodified code and must pass (set
#      HIPAA_MUTATE_BASELINE=0 to skip this when the test stage has just run it);
#   2. one line of the control's file is changed by exact-string replacement (the string must
#      occur exactly once, so this fails loudly when the code moves);
#   3. the one test runs (`cargo test ... -- --exact`) and must FAIL: the test itself fails, not
#      the build (a mutant that does not compile proves nothing and is an error here);
#   4. the file is restored from a backup copy (also on error, Ctrl-C or kill, through a trap), and
#      `git diff --quiet -- file` must hold.
# The restored file gets a fresh modification time on purpose: cargo decides freshness by mtime,
# and keeping the old one would let the mutant's build artifacts pass as up to date.
#
# After the restore the test is built again (`--no-run`), so the target directory never keeps a
# mutant's artifacts. Worktrees of one repository share artifact names in a shared target
# directory (cargo hashes path packages relative to the workspace root), so another checkout's
# build could pick up a mutant in the meantime: set HIPAA_MUTATE_TARGET_DIR to a private target
# directory there (a copy of an existing one's debug/deps, debug/build and debug/.fingerprint
# saves the dependency build). CI builds in its own checkout and needs neither.
#
# Mutations are ordered so that each rebuild is small: service crates first, the shared crates
# (token, runtime) last. Each mutation in another crate costs one incremental rebuild, and so does
# each restore (on the next build).
#
# Usage: bash tools/hipaa/mutate.sh [control-id ...]   (default: all). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The mutation table. check.py reads it too: each `test:` must be named in docs/hipaa.md, and each
# `line:` must occur exactly once in its `file:`. `cargo:` is the cargo test selection, `name:` the
# test's name as the harness prints it.
read -r -d '' TABLE <<'MUTATIONS' || true
id: totp-replay
control: TOTP replay protection (a code whose step was used is refused)
file: auth-svc/src/totp.rs
line: let fresh = last_used_step.is_none_or(|last| step > last);
with: let fresh = true;
test: auth-svc/src/totp.rs::codes_are_accepted_one_step_either_side_and_only_once
cargo: -p auth-svc --lib
name: totp::tests::codes_are_accepted_one_step_either_side_and_only_once

id: records-policy
control: records-svc's server-side policy check (token attributes against the record's policy)
file: records-svc/src/domain.rs
line: if !parsed.is_satisfied_by(&principal.attributes) {
with: if false {
test: crates/testkit/tests/records.rs::records_are_created_read_and_refused_by_policy
cargo: -p caremesh-testkit --test records
name: records_are_created_read_and_refused_by_policy

id: audit-tree
control: caremesh audit verify: every stored leaf hash recomputed from the event bytes
file: audit-svc/src/verify.rs
line: if row.leaf_hash.as_deref() != Some(leaf.as_slice()) {
with: if false {
test: crates/testkit/tests/audit.rs::verify_detects_edited_deleted_reordered_and_inserted_events_on_every_backend
cargo: -p caremesh-testkit --test audit
name: verify_detects_edited_deleted_reordered_and_inserted_events_on_every_backend

id: token-signature
control: access token signature verification (Ed25519, before any claim is trusted)
file: crates/token/src/lib.rs
line: key.verify_strict(parts.signed.as_bytes(), &parts.signature)
with: Ok::<(), ed25519_dalek::SignatureError>(())
test: crates/token/src/lib.rs::tampered_tokens_are_refused
cargo: -p caremesh-token --lib
name: tests::tampered_tokens_are_refused

id: outbox
control: the audit outbox: events stored in the caller's transaction, then shipped
file: crates/runtime/src/outbox.rs
line: if events.is_empty() {
with: if !events.is_empty() {
test: crates/testkit/tests/outbox.rs::an_event_written_while_audit_is_down_arrives_exactly_once_after_it_starts
cargo: -p caremesh-testkit --test outbox
name: an_event_written_while_audit_is_down_arrives_exactly_once_after_it_starts

id: revocation
control: the revocation feed: a token of a revoked session is refused on every service
file: crates/runtime/src/revocation.rs
line: if self.sessions.contains_key(&principal.session_id) {
with: if false {
test: crates/testkit/tests/revocation.rs::a_revoked_session_is_refused_by_every_service_and_after_a_restart
cargo: -p caremesh-testkit --test revocation
name: a_revoked_session_is_refused_by_every_service_and_after_a_restart
MUTATIONS

if [ -n "${HIPAA_MUTATE_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR=$HIPAA_MUTATE_TARGET_DIR
fi
echo "target directory: ${CARGO_TARGET_DIR:-target}"

BACKUP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/hipaa-mutate.XXXXXX")
ACTIVE_FILE=""   # the file currently mutated, if any

restore() {
  if [ -n "$ACTIVE_FILE" ]; then
    cp "$BACKUP_DIR/original" "$ACTIVE_FILE"
    touch "$ACTIVE_FILE"
    if git diff --quiet -- "$ACTIVE_FILE"; then
      echo "    restored $ACTIVE_FILE"
    else
      echo "ERROR: $ACTIVE_FILE differs from git after restoring; the original is in $BACKUP_DIR/original" >&2
      ACTIVE_FILE=""
      return 1
    fi
    ACTIVE_FILE=""
  fi
}
on_exit() {
  local status=$?
  restore || status=1
  rm -rf "$BACKUP_DIR"
  exit "$status"
}
trap on_exit EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM HUP

# One block of the table, by id, into the M_* variables.
load() {
  local wanted=$1 block
  M_ID="" M_CONTROL="" M_FILE="" M_LINE="" M_WITH="" M_TEST="" M_CARGO="" M_NAME=""
  while IFS= read -r block; do
    case "$block" in
      "id: "*) [ -n "$M_ID" ] && [ "$M_ID" = "$wanted" ] && return 0; M_ID=${block#id: } ;;
      "control: "*) M_CONTROL=${block#control: } ;;
      "file: "*) M_FILE=${block#file: } ;;
      "line: "*) M_LINE=${block#line: } ;;
      "with: "*) M_WITH=${block#with: } ;;
      "test: "*) M_TEST=${block#test: } ;;
      "cargo: "*) M_CARGO=${block#cargo: } ;;
      "name: "*) M_NAME=${block#name: } ;;
    esac
  done <<<"$TABLE"
  [ "$M_ID" = "$wanted" ]
}

ALL_IDS=$(sed -n 's/^id: //p' <<<"$TABLE")
IDS=${*:-$ALL_IDS}

# Runs the control's one test; prints the outcome: passed, failed, or an error (build failure,
# test not found). The output goes to $BACKUP_DIR/out.
run_test() {
  local status=0
  # shellcheck disable=SC2086 # M_CARGO is a list of cargo arguments.
  cargo test --locked $M_CARGO "$M_NAME" -- --exact >"$BACKUP_DIR/out" 2>&1 || status=$?
  if grep -qF "test $M_NAME ... ok" "$BACKUP_DIR/out" && [ "$status" -eq 0 ]; then
    echo passed
  elif grep -qF "test $M_NAME ... FAILED" "$BACKUP_DIR/out"; then
    echo failed
  elif grep -q "^running 0 tests" "$BACKUP_DIR/out" && ! grep -q "^running [1-9]" "$BACKUP_DIR/out"; then
    echo "error: no test named $M_NAME ran"
  elif grep -q "could not compile" "$BACKUP_DIR/out"; then
    echo "error: the build failed"
  else
    echo "error: cargo exited with $status without a verdict for $M_NAME"
  fi
}

show_output() {
  echo "    ---- last lines of the cargo output ----"
  tail -n 40 "$BACKUP_DIR/out" | sed 's/^/    | /'
}

# Count occurrences of the exact string $2 in file $1.
occurrences() {
  python3 -c 'import sys; print(open(sys.argv[1], encoding="utf-8").read().count(sys.argv[2]))' "$1" "$2"
}

FAILURES=0
SUMMARY=""
TOTAL_STARTED=$(date +%s)

if [ "${HIPAA_MUTATE_BASELINE:-1}" != 0 ]; then
  echo "==> baseline: each control's test passes on the unmodified code"
  for id in $IDS; do
    load "$id" || { echo "ERROR: no control '$id' in the table (known: $(echo $ALL_IDS))" >&2; exit 1; }
    started=$(date +%s)
    verdict=$(run_test)
    took=$(($(date +%s) - started))
    if [ "$verdict" = passed ]; then
      printf '    %-16s passed (%d s)  %s\n' "$id" "$took" "$M_TEST"
    else
      printf '    %-16s %s: %s (%d s)\n' "$id" "$M_TEST" "$verdict" "$took"
      show_output
      echo "ERROR: the baseline must pass before a mutation can prove anything" >&2
      exit 1
    fi
  done
fi

for id in $IDS; do
  load "$id" || { echo "ERROR: no control '$id' in the table" >&2; exit 1; }
  echo
  echo "==> $id: $M_CONTROL"
  echo "    file: $M_FILE"
  echo "    line: $M_LINE"
  echo "    with: $M_WITH"
  echo "    test: $M_TEST"
  if ! git diff --quiet -- "$M_FILE"; then
    echo "ERROR: $M_FILE has uncommitted changes; refusing to mutate it" >&2
    exit 1
  fi
  count=$(occurrences "$M_FILE" "$M_LINE")
  if [ "$count" != 1 ]; then
    echo "ERROR: the line occurs $count times in $M_FILE (must be exactly once): the code moved; update the table" >&2
    exit 1
  fi
  cp "$M_FILE" "$BACKUP_DIR/original"
  ACTIVE_FILE=$M_FILE
  python3 - "$M_FILE" "$M_LINE" "$M_WITH" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path, encoding="utf-8").read()
open(path, "w", encoding="utf-8").write(text.replace(old, new, 1))
PY
  changed=$(git diff --numstat -- "$M_FILE" | awk '{print $1 " " $2}')
  if [ "$changed" != "1 1" ]; then
    echo "ERROR: the mutation changed more than one line of $M_FILE ($changed)" >&2
    exit 1
  fi
  started=$(date +%s)
  verdict=$(run_test)
  took=$(($(date +%s) - started))
  cp "$BACKUP_DIR/out" "$BACKUP_DIR/mutant.out"
  restore
  rebuild_started=$(date +%s)
  # shellcheck disable=SC2086
  if ! cargo test --locked $M_CARGO --no-run >"$BACKUP_DIR/out" 2>&1; then
    show_output
    echo "ERROR: the restored code does not build" >&2
    exit 1
  fi
  rebuilt=$(($(date +%s) - rebuild_started))
  case "$verdict" in
    failed)
      result="failed as expected"
      # Why it failed: the panic and its message, so a reader can see the control's assertion.
      grep -A1 "panicked at" "$BACKUP_DIR/mutant.out" | head -n 2 | cut -c1-200 | sed 's/^/    > /'
      grep -E "^\s+(Compiling|Finished)" "$BACKUP_DIR/mutant.out" | sed 's/^ */    build: /'
      ;;
    passed)
      result="ERROR: the test PASSED with the control removed"
      FAILURES=$((FAILURES + 1))
      show_output
      ;;
    *)
      result="ERROR: $verdict"
      FAILURES=$((FAILURES + 1))
      show_output
      ;;
  esac
  echo "    $result ($took s with the mutant's build; $rebuilt s to rebuild restored)"
  SUMMARY+=$(printf '%-16s %5d s %5d s  %s' "$id" "$took" "$rebuilt" "$result")$'\n'
done

echo
echo "control          mutant  restore  (mutant: its incremental build and the test run; restore: rebuild)"
printf '%s' "$SUMMARY"
printf '%-16s %5d s (baseline included)\n' "total" $(($(date +%s) - TOTAL_STARTED))
if [ "$FAILURES" -ne 0 ]; then
  echo "ERROR: $FAILURES control(s) could be removed without their test failing (or the run broke)" >&2
  exit 1
fi
echo "every removed control made its test fail"
