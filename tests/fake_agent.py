#!/usr/bin/env python3
"""A stand-in for an AI coding CLI, driven by its prompt (one argument):

ratelimit-once:NAME  first call prints a rate-limit error with "retry after 2 seconds" and
                     fails; later calls succeed (state kept in NAME.state in the cwd)
ratelimit-wait:SECS:NAME  like ratelimit-once, with "retry after SECS seconds"
auth                 prints an auth error and fails
chatty-success       succeeds while mentioning "rate limit" in its output
timed:LOG            writes its start and end times to LOG, sleeping 0.4 s between
hold:FILE:LOG        like timed, but sleeps while FILE exists instead
anything else        succeeds, echoing the prompt
"""

import sys
from pathlib import Path

arg = sys.argv[1] if len(sys.argv) > 1 else ""
if arg == "--version":
    print("fake-agent 1.0")
    sys.exit(0)
if arg.startswith("ratelimit-once:"):
    state = Path(arg.split(":", 1)[1] + ".state")
    if not state.exists():
        state.write_text("limited")
        print("Error: 429 rate limit exceeded, retry after 2 seconds", file=sys.stderr)
        sys.exit(1)
    print("done after the rate limit")
    sys.exit(0)
if arg.startswith("ratelimit-wait:"):
    _, secs, name = arg.split(":", 2)
    state = Path(name + ".state")
    if not state.exists():
        state.write_text("limited")
        print(f"Error: 429 rate limit exceeded, retry after {secs} seconds", file=sys.stderr)
        sys.exit(1)
    print("done after the rate limit")
    sys.exit(0)
if arg.startswith("timed:"):
    import time

    log = Path(arg.split(":", 1)[1])
    with log.open("a") as f:
        f.write(f"start {time.time()}\n")
    time.sleep(0.4)
    with log.open("a") as f:
        f.write(f"end {time.time()}\n")
    sys.exit(0)
if arg.startswith("hold:"):
    import time

    _, hold, log_name = arg.split(":", 2)
    log = Path(log_name)
    with log.open("a") as f:
        f.write(f"start {time.time()}\n")
    while Path(hold).exists():
        time.sleep(0.05)
    with log.open("a") as f:
        f.write(f"end {time.time()}\n")
    sys.exit(0)
if arg.startswith("json:"):
    import json

    print(json.dumps({"type": "result", "result": arg.split(":", 1)[1], "is_error": False}))
    sys.exit(0)
if arg.startswith("json-error-once:"):
    import json

    state = Path(arg.split(":", 1)[1] + ".state")
    if not state.exists():
        state.write_text("limited")
        text = "API Error: rate limit reached, retry after 1 seconds"
        print(json.dumps({"type": "result", "result": text, "is_error": True}))
        sys.exit(0)  # like `claude -p`: an API error with exit code 0
    print(json.dumps({"type": "result", "result": "recovered", "is_error": False}))
    sys.exit(0)
if arg == "auth":
    print("Error: invalid api key", file=sys.stderr)
    sys.exit(1)
if arg == "chatty-success":
    print("note: no rate limit was hit this time (429 is just a number)")
    sys.exit(0)
print(f"ok: {arg}")
