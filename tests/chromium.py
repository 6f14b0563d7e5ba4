"""Headless Debian chromium for the browser tests, driven by Playwright for Python.

The browser is installed by the project's own `tests/browser/setup` (apt), once per test
session, when /usr/bin/chromium is missing; a machine where that cannot work skips the
browser tests with the reason. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
SETUP = Path(__file__).parent / "browser" / "setup"
ARTIFACTS = Path(__file__).parent / "artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SETUP_TIMEOUT_SECONDS = 900
# A browser test may first wait for the one-time chromium install.
BROWSER_TEST_TIMEOUT = SETUP_TIMEOUT_SECONDS + 120


@functools.cache
def chromium_problem() -> str | None:
    """Why chromium cannot be had (None: it is there, installed now if it was not)."""
    if CHROMIUM.exists():
        return None
    try:
        done = subprocess.run(
            ["bash", str(SETUP)], capture_output=True, text=True, timeout=SETUP_TIMEOUT_SECONDS
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"chromium is missing and tests/browser/setup failed: {exc}"
    if done.returncode != 0 or not CHROMIUM.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return "chromium is missing and tests/browser/setup could not install it: " + " / ".join(
            tail
        )
    return None


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A Playwright `Browser` on Debian's chromium, or a skip saying why there is none."""
    problem = chromium_problem()
    if problem is not None:
        pytest.skip(problem)
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright (a dev dependency) is not installed")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
