#!/usr/bin/env bash
# Browser tests of the web app (issue #15): builds caremesh and carectl, starts `caremesh up` in a temporary
# data directory on free ports with the web root at web/dist, runs the Playwright tests
# (playwright-core + node:test) in Debian's chromium, and always stops the mesh.
#
#   bash web/e2e/run.sh            # from anywhere; web/dist must be built (npm run build)
#   E2E_BENCH=1 bash web/e2e/run.sh   # then the web benchmark (bench/run.mjs) on the same mesh
#
# Settings: CHROMIUM (default /usr/bin/chromium), CARGO_TARGET_DIR (where cargo puts caremesh),
# CAREMESH_BIN (a caremesh binary already built: no cargo build; carectl is taken from beside it),
# CARECTL_BIN (the carectl the tests drive),
# E2E_SCREENSHOTS (a directory: the tests save a screenshot of each screen there),
# E2E_TESTS (test files to run instead of all, e.g. "e2e/flow.test.mjs").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
web="$(dirname "$here")"
repo="$(dirname "$web")"
cd "$repo"

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "e2e: $CHROMIUM is missing (Debian: apt-get install -y chromium)" >&2
  exit 1
fi
if [[ ! -f web/dist/index.html ]]; then
  echo "e2e: web/dist is not built (npm --prefix web run build)" >&2
  exit 1
fi
if [[ ! -d web/node_modules/playwright-core ]]; then
  echo "e2e: web/node_modules is missing (npm --prefix web ci)" >&2
  exit 1
fi

if [[ -n "${CAREMESH_BIN:-}" ]]; then
  caremesh="$CAREMESH_BIN"
  # carectl beside it unless CARECTL_BIN says otherwise.
  export CARECTL_BIN="${CARECTL_BIN:-$(dirname "$CAREMESH_BIN")/carectl}"
  echo "e2e: using $caremesh and $CARECTL_BIN"
else
  echo "e2e: cargo build -p caremesh -p carectl"
  cargo build -q -p caremesh -p carectl
  caremesh="${CARGO_TARGET_DIR:-$repo/target}/debug/caremesh"
  export CARECTL_BIN="${CARECTL_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/carectl}"
fi
if [[ ! -x "$CARECTL_BIN" ]]; then
  echo "e2e: $CARECTL_BIN is missing (the tests drive a second party with carectl)" >&2
  exit 1
fi

# Twelve free ports: the web origin, each service's gRPC and health ports, then `npm run dev`'s.
read -r -a ports < <(node -e '
const net = require("node:net");
const servers = Array.from({ length: 12 }, () => net.createServer());
Promise.all(servers.map((s) => new Promise((ok) => s.listen(0, "127.0.0.1", () => ok(s.address().port)))))
  .then((ports) => { console.log(ports.join(" ")); servers.forEach((s) => s.close()); });
')

data="$(mktemp -d "${TMPDIR:-/tmp}/caremesh-e2e.XXXXXX")"
pid=""
dev_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$dev_pid" ]]; then kill "$dev_pid" 2>/dev/null || true; wait "$dev_pid" 2>/dev/null || true; fi
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [[ $status -ne 0 ]]; then
    echo "e2e: failed; the mesh's log:" >&2
    tail -n 60 "$data/caremesh.log" >&2 || true
  fi
  rm -rf "$data"
  exit $status
}
trap cleanup EXIT INT TERM

env_vars=(
  "CAREMESH_WEB_ROOT=$web/dist"
  "CAREMESH_WEB_LISTEN=127.0.0.1:${ports[0]}"
  # Several registrations and sign-ins from one address (the web origin's) per run.
  "CAREMESH_AUTH_REGISTER_RATE_PER_MINUTE=1000"
  "CAREMESH_AUTH_LOGIN_RATE_PER_MINUTE=1000"
  # Three wrong passwords in a row lock an account (before the backoff, which starts after five),
  # so the flow test can lock one and unlock it in the admin screen.
  "CAREMESH_AUTH_LOCKOUT_THRESHOLD=3"
)
i=1
for svc in AUTH MESSAGING ABE RECORDS AUDIT; do
  env_vars+=(
    "CAREMESH_${svc}_LISTEN=127.0.0.1:${ports[$i]}"
    "CAREMESH_${svc}_ENDPOINT=localhost:${ports[$i]}"
    "CAREMESH_${svc}_OPS_LISTEN=127.0.0.1:${ports[$((i + 5))]}"
  )
  i=$((i + 1))
done

echo "e2e: caremesh up (data in $data, web on 127.0.0.1:${ports[0]})"
env "${env_vars[@]}" "$caremesh" up --data-dir "$data" >"$data/caremesh.log" 2>&1 &
pid=$!

for _ in $(seq 1 300); do
  if grep -q "caremesh is up" "$data/caremesh.log" 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "e2e: caremesh up exited" >&2; exit 1; fi
  sleep 0.1
done
grep -q "caremesh is up" "$data/caremesh.log" || { echo "e2e: caremesh up not ready after 30 s" >&2; exit 1; }

export E2E_BASE_URL="https://localhost:${ports[0]}"
export E2E_WEB_CERT="$data/pki/web.crt"
# The mesh's data directory: bootstrap-admin.txt holds the first admin's password and TOTP secret.
export E2E_DATA_DIR="$data"
echo "e2e: browser tests against $E2E_BASE_URL"
# E2E_TESTS: some test files only (e.g. "e2e/flow.test.mjs"); all of them by default.
(cd "$web" && node --test --test-concurrency=1 --test-timeout=180000 --test-reporter=spec ${E2E_TESTS:-e2e/*.test.mjs})

# `npm run dev` (vite's dev server) in front of the same mesh: a gRPC-Web call through its proxy
# reaches auth-svc (which asks for a token), not the web origin's cross-origin refusal.
echo "e2e: npm run dev proxies gRPC-Web to the web origin"
(cd "$web" && CAREMESH_WEB_URL="$E2E_BASE_URL" exec node_modules/.bin/vite --port "${ports[11]}" --strictPort) >"$data/vite.log" 2>&1 &
dev_pid=$!
dev="http://localhost:${ports[11]}"
for _ in $(seq 1 100); do curl -fs -o /dev/null "$dev/" && break; sleep 0.2; done
answer="$(printf '\0\0\0\0\0' | curl -s -D - -o /dev/null -X POST -H 'content-type: application/grpc-web+proto' \
  -H 'x-grpc-web: 1' -H "origin: $dev" --data-binary @- "$dev/caremesh.auth.v1.AuthService/WhoAmI")"
if ! grep -qi '^grpc-status: 16' <<<"$answer" || ! grep -qi 'access%20token' <<<"$answer"; then
  echo "e2e: npm run dev did not reach auth-svc through the web origin; it answered:" >&2
  echo "$answer" >&2
  exit 1
fi
echo "e2e: npm run dev: ok"

# E2E_BENCH=1: the web benchmark (bench/run.mjs) against the same mesh and dev server.
if [[ -n "${E2E_BENCH:-}" ]]; then
  echo "e2e: web benchmark"
  (cd "$web" && BENCH_DEV_URL="$dev" node bench/run.mjs)
fi
