"""`store_url` parsing that needs no store implementation: which kind of store a URL names,
and its identity (`store_identity`), which says whether two URLs name the same store."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from podium.core.errors import PodiumError

SUPPORTED = (
    "sqlite:///ABSOLUTE/PATH (for example the default sqlite:///<home>/podium.db), or "
    "postgresql://[user[:password]@]host[:port]/database for a store shared by several "
    "conductors"
)
POSTGRES_SCHEMES = ("postgresql", "postgres")
POSTGRES_DEFAULT_PORT = 5432
# Query parameters of a PostgreSQL URL that carry a secret rather than say which database.
_SECRET_PARAMS = {"password"}


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


def _without_password(netloc: str) -> str:
    userinfo, at, hosts = netloc.rpartition("@")
    return f"{userinfo.partition(':')[0]}@{hosts}" if at else hosts


def store_identity(store_url: str) -> str:
    """The store `store_url` names, as one string that is equal for two URLs naming the same
    store and holds no password (it is shown and written to conductor.json): a SQLite file
    by its real path; a PostgreSQL database with the default port filled in, the host in
    lower case, and the query sorted. A URL this cannot parse is kept as it is, but for
    its password."""
    try:
        path = sqlite_path(store_url)
    except PodiumError:
        path = None
    if path is not None:
        return f"sqlite://{os.path.realpath(path)}"
    parts = urlsplit(store_url)
    query = urlencode(
        sorted((k, v) for k, v in parse_qsl(parts.query) if k.lower() not in _SECRET_PARAMS)
    )
    tail = parts.path + (f"?{query}" if query else "")
    if parts.scheme not in POSTGRES_SCHEMES:
        return f"{parts.scheme}://{_without_password(parts.netloc)}{tail}"
    try:
        port = parts.port
        host = parts.hostname or ""
    except ValueError:  # several hosts, or a port that is not a number: kept as written
        return f"postgresql://{_without_password(parts.netloc)}{tail}"
    if ":" in host:
        host = f"[{host}]"
    if host and port is None:
        port = POSTGRES_DEFAULT_PORT
    user = quote(unquote(parts.username), safe="") + "@" if parts.username else ""
    return f"postgresql://{user}{host}{f':{port}' if port else ''}{tail}"
