#!/usr/bin/env bash
# MCP conformance + Inspector smoke test against a real `podium serve`.
#  1. starts `podium serve --transport streamable-http` on a free 127.0.0.1 port with a temp
#     PODIUM_HOME, waits for /healthz, and runs the server scenarios of the MCP conformance
#     suite that apply to any server;
#  2. runs the MCP Inspector CLI against the stdio server (`podium serve`, temp home):
#     tools/list must list Podium's tools, tools/call status must return `jobs_by_status`.
# Exits non-zero on any failure; the server and temp dirs are removed on exit.
# Needs ../shared/tools/mcp-node (installs Node 22 + the tools on first use, about 30 s).
# Env: PODIUM (the podium executable; default .venv/bin/podium), MCP_NODE (the mcp-node
# wrapper), PYTHON (a python for finding a free port; default .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PODIUM=${PODIUM:-$ROOT/.venv/bin/podium}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
MCP_NODE=${MCP_NODE:-$ROOT/../shared/tools/mcp-node}
SCENARIOS=(server-initialize ping tools-list resources-list prompts-list
  server-sse-multiple-streams dns-rebinding-protection)
EXPECTED_TOOLS=(submit_job validate_spec list_jobs status pause resume cancel clear
  clear_rate_limits snapshots logs)

# The Inspector spawns the server from its own working directory: use absolute paths.
absolute() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$PWD" "$(basename "$1")"); }
PODIUM=$(absolute "$PODIUM")
PYTHON=$(absolute "$PYTHON")
MCP_NODE=$(absolute "$MCP_NODE")

for f in "$PODIUM" "$PYTHON" "$MCP_NODE"; do
  [ -x "$f" ] || { echo "mcp_conformance: $f is not executable" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/podium-conformance.XXXXXX")
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
  fi
  # `podium serve` over stdio started a detached conductor on the stdio home: stop it.
  if [ -d "$WORK/stdio-home" ]; then
    env -u PODIUM_TOKEN "$PODIUM" --home "$WORK/stdio-home" stop --force >/dev/null 2>&1
  fi
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

FAILED=()
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1${2:+: $2}"; FAILED+=("$1"); }

# Install/warm the Node tools first so their one-time install does not eat scenario time.
"$MCP_NODE" conformance list --server >/dev/null 2>"$WORK/node-install.log" || {
  cat "$WORK/node-install.log" >&2
  echo "mcp_conformance: could not install/run the conformance tool" >&2
  exit 2
}

# ----- 1. conformance scenarios over streamable HTTP ------------------------------------------
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

for scenario in "${SCENARIOS[@]}"; do
  out="$WORK/conformance-$scenario.log"
  if (cd "$WORK" && timeout 120 "$MCP_NODE" conformance server \
      --url "http://127.0.0.1:$PORT/mcp" --scenario "$scenario") >"$out" 2>&1; then
    pass "conformance $scenario"
  else
    fail "conformance $scenario"
    sed 's/^/    /' "$out"
  fi
done

# ----- 2. Inspector CLI against the stdio server ----------------------------------------------
mkdir -p "$WORK/stdio-home"
inspect() { # out-file inspector-args...
  local out=$1; shift
  (cd "$WORK" && env -u PODIUM_TOKEN PODIUM_HOME="$WORK/stdio-home" timeout 120 \
    "$MCP_NODE" inspector --cli -e PODIUM_HOME="$WORK/stdio-home" "$PODIUM" serve "$@") \
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
  if "$PYTHON" - "$WORK/status.json" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
assert not data.get("isError"), data
structured = data["structuredContent"]
assert isinstance(structured["jobs_by_status"], dict), structured
assert structured["ready"] is True, structured
EOF
  then
    pass "inspector tools/call status (jobs_by_status present)"
  else
    fail "inspector tools/call status" "no jobs_by_status in the result"
    sed 's/^/    /' "$WORK/status.json"
  fi
else
  fail "inspector tools/call status" "exit status $?"
  sed 's/^/    /' "$WORK/status.json" "$WORK/status.json.err"
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "mcp_conformance: ${#FAILED[@]} failure(s): ${FAILED[*]}" >&2
  exit 1
fi
echo "mcp_conformance: all passed"
