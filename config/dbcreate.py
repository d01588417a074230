"""Create the PostgreSQL database named by ``DATABASE_URL`` if it does not exist (``make prod-up``).

Run as ``python -m config.dbcreate``; needs no Django settings. The server is reached through the
same URL with the maintenance database ``postgres``, so the user, host, port and password are the
ones the application uses.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postflow"


def database_name(url: str) -> str:
    """The database of a ``postgres://user@host:port/name`` URL (percent-decoded).

    Raises ValueError for a URL that is not PostgreSQL or names no database.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        raise ValueError(f"DATABASE_URL is not a PostgreSQL URL: scheme {parts.scheme!r}.")
    name = unquote(parts.path.lstrip("/"))
    if not name or "/" in name:
        raise ValueError("DATABASE_URL names no database (expected postgres://…/<name>).")
    return name


def ensure_database(url: str) -> bool:
    """Create the database ``url`` names unless it exists. Returns True when it was created."""
    import psycopg
    from psycopg import sql

    name = database_name(url)
    parts = urlsplit(url)
    admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def main() -> int:
    url = os.environ.get("DATABASE_URL") or DEFAULT_URL
    try:
        created = ensure_database(url)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"database {database_name(url)}: {'created' if created else 'exists'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
