"""Numbered migrations, for every store: `NNNN_name.sql` files in a store package's
`migrations/` folder, numbered 1..N without gaps. The stores keep the same numbers and names
(each in its own dialect), so a schema version means the same in every store."""

from __future__ import annotations

import re
from importlib import resources


def load_migrations(package: str) -> list[tuple[int, str, str]]:
    """(number, name, sql) of each migration of `package`, in order."""
    folder = resources.files(package).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    found.sort()
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps, found {numbers}")
    return found
