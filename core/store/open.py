"""`open_store(config)`: the one place that turns a `store_url` into a store."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from podium.core.config import PodiumConfig
from podium.core.errors import PodiumError
from podium.core.store.base import Store

SUPPORTED = (
    "sqlite:///ABSOLUTE/PATH (for example the default sqlite:///<home>/podium.db), or "
    "postgresql://[user[:password]@]host[:port]/database for a store shared by several "
    "conductors"
)
POSTGRES_SCHEMES = ("postgresql", "postgres")


def sqlite_path(store_url: str) -> Path | None:
    """The database file of a `sqlite:` URL, or None for another scheme."""
    parts = urlsplit(store_url)
    if parts.scheme != "sqlite":
        return None
    if parts.netloc or not parts.path.startswith("/"):
        raise PodiumError(
            f"store_url: {store_url!r} is not a SQLite URL with an absolute path; use {SUPPORTED}"
        )
    # sqlite:////abs/path (the SQLAlchemy spelling) names the same file as sqlite:///abs/path.
    return Path("/" + unquote(parts.path).lstrip("/"))


def is_postgres(store_url: str) -> bool:
    return urlsplit(store_url).scheme in POSTGRES_SCHEMES


async def open_store(config: PodiumConfig) -> Store:
    # Imported where used so nothing above the store layer depends on an implementation.
    path = sqlite_path(config.store_url)
    if path is not None:
        from podium.core.store.sqlite.store import SQLiteStore

        return await SQLiteStore.open(path)
    if is_postgres(config.store_url):
        from podium.core.store.postgres.store import PostgresStore

        return await PostgresStore.open(config.store_url, config.conductor_id)
    scheme = urlsplit(config.store_url).scheme or "(none)"
    raise PodiumError(
        f"store_url: scheme {scheme!r} is not supported by this version of Podium; "
        f"supported: {SUPPORTED}"
    )
