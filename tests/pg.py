"""PostgreSQL for tests: the server the machine runs (PODIUM_TEST_PG_URL, default
postgresql://127.0.0.1:5432/test), one fresh schema per test, dropped afterwards. Tests that
need it skip, saying why, when no server answers."""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

PG_URL = os.environ.get("PODIUM_TEST_PG_URL", "postgresql://127.0.0.1:5432/test")


@functools.cache
def unreachable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - a dev install has it
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} is not reachable ({str(exc).strip()})"
    return None


def require() -> None:
    reason = unreachable()
    if reason is not None:
        pytest.skip(f"needs PostgreSQL: {reason}")


def schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def fresh_schema(prefix: str = "t") -> Iterator[str]:
    """A store_url on a schema of its own (created now, dropped with everything in it)."""
    import psycopg

    require()
    schema = f"podium_{prefix}_{secrets.token_hex(5)}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(schema)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
