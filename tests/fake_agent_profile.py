"""The instrument profile that runs tests/fake_agent.py: a test double for an AI coding CLI
whose rate-limit wording ("rate limit ... retry after N seconds") makes holds."""

from __future__ import annotations

import sys
from pathlib import Path

FAKE_AGENT = Path(__file__).with_name("fake_agent.py")


def fake_agent_profile(name: str = "fake-agent") -> str:
    return f"""
name: {name}
description: test double for an AI coding CLI
executable: {sys.executable}
args: ["{FAKE_AGENT}", "{{prompt}}"]
prompt_via: argv
patterns:
  rate_limit:
    - regex: "rate limit.*retry after (?P<secs>[0-9]+) seconds"
      retry_after_group: secs
"""
