"""Loaders on every etlctl connection that never fail on a value another program wrote: one odd row
must not take down status, doctor or the sweep (see :func:`install`)."""

from __future__ import annotations


def install(conn):
    """Loaders that never fail on a value another program wrote: one odd row must not take down
    status, doctor or the sweep.

    - JSON: etlctl.core.document.loads (a document nested too deep for Python, or a number it
      cannot hold, becomes a marker instead of RecursionError or ValueError);
    - timestamps psycopg cannot load ('infinity', '-infinity', years past 9999) become the ends
      of Python's calendar; render shows them as infinity."""
    from datetime import datetime, timezone

    from psycopg import DataError
    from psycopg.types.datetime import TimestampLoader, TimestamptzLoader
    from psycopg.types.json import set_json_loads

    from etlctl.core import document

    set_json_loads(document.loads, conn)

    def ends(low, high):
        def load(loader, data):
            raw = bytes(data)
            if raw == b"infinity":
                return high
            if raw == b"-infinity":
                return low
            try:
                return super(type(loader), loader).load(data)
            except DataError:
                return low if raw.endswith(b"BC") else high
        return load

    naive = type("InfinityTimestampLoader", (TimestampLoader,), {"load": ends(datetime.min, datetime.max)})
    aware = type("InfinityTimestamptzLoader", (TimestamptzLoader,), {
        "load": ends(datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc))})
    conn.adapters.register_loader("timestamp", naive)
    conn.adapters.register_loader("timestamptz", aware)
    return conn
