"""`open_store(config)`: the one place that turns a `store_url` into a store."""

from __future__ import annotations

from urllib.parse import urlsplit

from podium.core.config import PodiumConfig
from podium.core.errors import PodiumError
from podium.core.store.base import Store
from podium.core.store.urls import SUPPORTED, is_postgres, sqlite_path


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
