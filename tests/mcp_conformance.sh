#!/usr/bin/env bash
# MCP conformance + Inspector check against a real `podium serve`.
#  1. starts `podium serve --transport streamable-http` on a free 127.0.0.1 port with a temp
#     PODIUM_HOME, waits for /healthz, and runs the WHOLE server conformance suite
#     (`--suite all`) against it with tests/conformance-baseline.yml: a failure not listed
#     there fails, and so does a listed check that passes (a stale baseline);
#  2. runs the tasks scenarios through `podium serve` (the stdio bridge, behind
#     tests/stdio_relay.py) with tests/conformance-baseline-bridge.yml;
#  3. runs the MCP Inspector CLI against the stdio server (`podium serve`) with PODIUM_HOME
#     passed explicitly (the Inspector does not hand its own environment to the server, which
#     would otherwise run on the user's real ~/.podium): tools/list must list Podium's tools,
#     tools/call status must report that temp home, resources/read must return the spec schema.
# The Node tools (Node 22, the conformance suite, the Inspector) come from the npm registry
# through .ci/node-tools, cached after the first run; when the registry cannot be reached the
# check is skipped with a message (exit 0). Any other problem exits non-zero.
# Env: PODIUM (the podium executable; default .venv/bin/podium), PYTHON (default
# .venv/bin/python), PODIUM_NODE_CACHE (see .ci/node-tools).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PODIUM=${PODIUM:-$ROOT/.venv/bin/podium}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
NODE_TOOLS=$ROOT/.ci/node-tools
BASELINE=$ROOT/tests/conformance-baseline.yml
SKIPPED=77
EXPECTED_TOOLS=(submit_job validate_spec list_jobs status pause resume cancel clear
  clear_rate_limits snapshots logs run_job approve)

# The Inspector spawns the server from its own working directory: use absolute paths.
absolute() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$PWD" "$(basename "$1")"); }
PODIUM=$(absolute "$PODIUM")
PYTHON=$(absolute "$PYTHON")

for f in "$PODIUM" "$PYTHON" "$NODE_TOOLS"; do
  [ -x "$f" ] || { echo "mcp_conformance: $f is not executable" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/podium-conformance.XXXXXX")
SERVER_PID=""
RELAY_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
  fi
  if [ -n "${RELAY_PID:-}" ] && kill -0 "$RELAY_PID" 2>/dev/null; then
    kill -TERM "$RELAY_PID" 2>/dev/null
  fi
  # `podium serve` over stdio started a detached conductor on each stdio home: stop them.
  for stdio_home in "$WORK/stdio-home" "$WORK/bridge-home"; do
    if [ -d "$stdio_home" ]; then
      env -u PODIUM_TOKEN "$PODIUM" --home "$stdio_home" stop --force >/dev/null 2>&1
    fi
  done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

FAILED=()
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1${2:+: $2}"; FAILED+=("$1"); }

# Install the Node tools first so their one-time install does not eat scenario time.
"$NODE_TOOLS" install >"$WORK/node-install.log" 2>&1
status=$?
if [ "$status" -eq "$SKIPPED" ]; then
  echo "mcp_conformance: SKIPPED, the npm registry is unreachable (needed once to fetch Node 22," \
    "@modelcontextprotocol/conformance and the Inspector):"
  sed 's/^/    /' "$WORK/node-install.log"
  exit 0
elif [ "$status" -ne 0 ]; then
  cat "$WORK/node-install.log" >&2
  echo "mcp_conformance: could not install the Node tools" >&2
  exit 2
fi
cat "$WORK/node-install.log"

# ----- 1. the whole conformance suite over streamable HTTP ----------------------------------
PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$WORK/http-home"
env -u PODIUM_TOKEN PODIUM_HOME="$WORK/http-home" \
  "$PODIUM" serve --transport streamable-http --host 127.0.0.1 --port "$PORT" \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

ready=""
for _ in $(seq 150); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
  if body=$(curl -fsS "http://127.0.0.1:$PORT/healthz" 2>/dev/null) \
    && printf %s "$body" | grep -q '"ready": *true'; then
    ready=1; break
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "mcp_conformance: server did not become ready on port $PORT" >&2
  cat "$WORK/server.log" >&2
  exit 1
fi
echo "server ready on http://127.0.0.1:$PORT/mcp (pid $SERVER_PID)"

out="$WORK/conformance.log"
if (cd "$WORK" && timeout 1200 "$NODE_TOOLS" conformance server \
    --url "http://127.0.0.1:$PORT/mcp" --suite all --expected-failures "$BASELINE" \
    -o "$WORK/results") >"$out" 2>&1; then
  pass "conformance suite --suite all ($(grep -m1 '^Total:' "$out" | sed 's/^Total: //') checks; every failure is one of the $(grep -c '^  - ' "$BASELINE") in the baseline)"
else
  fail "conformance suite" "see below"
  sed -n '/=== SUMMARY ===/,$p' "$out" | sed 's/^/    /'
fi

# ----- 2. the tasks scenarios through the stdio bridge ----------------------------------------
# The suite speaks HTTP only: tests/stdio_relay.py puts an HTTP front on `podium serve` (the
# bridge an agent host launches), which attaches to (and starts) the home's conductor.
BRIDGE_HOME="$WORK/bridge-home"
mkdir -p "$BRIDGE_HOME"
RELAY_PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env -u PODIUM_TOKEN PODIUM_HOME="$BRIDGE_HOME" \
  "$PYTHON" "$ROOT/tests/stdio_relay.py" "$RELAY_PORT" "$PODIUM" serve >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
relay_ready=""
for _ in $(seq 150); do
  if ! kill -0 "$RELAY_PID" 2>/dev/null; then break; fi
  # Any HTTP answer (a 404 for /) means the relay listens.
  if curl -sS -o /dev/null "http://127.0.0.1:$RELAY_PORT/" 2>/dev/null; then
    relay_ready=1; break
  fi
  sleep 0.1
done
if [ -z "$relay_ready" ]; then
  fail "tasks scenarios through the bridge" "the stdio relay did not start"
  cat "$WORK/relay.log" >&2
else
  bridge_failed=()
  for scenario in tasks-lifecycle tasks-capability-negotiation tasks-wire-fields \
      tasks-request-state-removal tasks-mrtr-input tasks-request-headers \
      tasks-dispatch-and-envelope tasks-status-notifications tasks-required-task-error \
      tasks-mrtr-composition; do
    if ! (cd "$WORK" && timeout 300 "$NODE_TOOLS" conformance server \
        --url "http://127.0.0.1:$RELAY_PORT/mcp" --scenario "$scenario" --suite all \
        --expected-failures "$ROOT/tests/conformance-baseline-bridge.yml") \
        >"$WORK/bridge-$scenario.log" 2>&1; then
      bridge_failed+=("$scenario")
      sed -n '/=== SUMMARY ===/,$p' "$WORK/bridge-$scenario.log" | sed 's/^/    /'
    fi
  done
  if [ ${#bridge_failed[@]} -eq 0 ]; then
    pass "tasks scenarios through podium serve (the stdio bridge; every failure is in tests/conformance-baseline-bridge.yml)"
  else
    fail "tasks scenarios through the bridge" "${bridge_failed[*]}"
  fi
fi
kill -TERM "$RELAY_PID" 2>/dev/null
wait "$RELAY_PID" 2>/dev/null
env -u PODIUM_TOKEN "$PODIUM" --home "$BRIDGE_HOME" stop --force >/dev/null 2>&1

# ----- 3. Inspector CLI against the stdio server ----------------------------------------------
STDIO_HOME="$WORK/stdio-home"
mkdir -p "$STDIO_HOME"
inspect() { # out-file inspector-args...
  local out=$1; shift
  (cd "$WORK" && env -u PODIUM_TOKEN timeout 120 \
    "$NODE_TOOLS" inspector --cli -e "PODIUM_HOME=$STDIO_HOME" "$PODIUM" serve "$@") \
    >"$out" 2>"$out.err"
}

if inspect "$WORK/tools.json" --method tools/list; then
  missing=$("$PYTHON" - "$WORK/tools.json" "${EXPECTED_TOOLS[@]}" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
names = {t["name"] for t in data["tools"]}
undescribed = [t["name"] for t in data["tools"] if not t.get("description")]
print(" ".join(sorted(set(sys.argv[2:]) - names) + [f"{n}(no description)" for n in undescribed]))
EOF
  )
  if [ $? -eq 0 ] && [ -z "$missing" ]; then
    pass "inspector tools/list (${#EXPECTED_TOOLS[@]} tools)"
  else
    fail "inspector tools/list" "missing: ${missing:-unparseable output}"
    sed 's/^/    /' "$WORK/tools.json"
  fi
else
  fail "inspector tools/list" "exit status $?"
  sed 's/^/    /' "$WORK/tools.json" "$WORK/tools.json.err"
fi

if inspect "$WORK/status.json" --method tools/call --tool-name status; then
  if "$PYTHON" - "$WORK/status.json" "$STDIO_HOME" <<'EOF'
import json, os, sys
data = json.load(open(sys.argv[1]))
assert not data.get("isError"), data
structured = data["structuredContent"]
assert isinstance(structured["jobs_by_status"], dict), structured
assert structured["ready"] is True, structured
# The server ran on the home given with -e, never the user's real ~/.podium.
assert os.path.realpath(structured["home"]) == os.path.realpath(sys.argv[2]), structured["home"]
EOF
  then
    pass "inspector tools/call status (on the PODIUM_HOME given with -e)"
  else
    fail "inspector tools/call status" "wrong home or no jobs_by_status"
    sed 's/^/    /' "$WORK/status.json"
  fi
else
  fail "inspector tools/call status" "exit status $?"
  sed 's/^/    /' "$WORK/status.json" "$WORK/status.json.err"
fi

if inspect "$WORK/schema.json" --method resources/read --uri podium://spec/schema; then
  if "$PYTHON" - "$WORK/schema.json" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
schema = json.loads(data["contents"][0]["text"])
assert {"name", "sheets", "instrument_config"} <= set(schema["properties"]), schema
EOF
  then
    pass "inspector resources/read podium://spec/schema"
  else
    fail "inspector resources/read podium://spec/schema" "not the spec schema"
    sed 's/^/    /' "$WORK/schema.json"
  fi
else
  fail "inspector resources/read podium://spec/schema" "exit status $?"
  sed 's/^/    /' "$WORK/schema.json" "$WORK/schema.json.err"
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "mcp_conformance: ${#FAILED[@]} failure(s): ${FAILED[*]}" >&2
  exit 1
fi
echo "mcp_conformance: all passed"
