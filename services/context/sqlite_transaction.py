"""One write transaction on the SQLite store's connection, shared by `sqlite.py` and
`handoffs_sqlite.py` (the caller holds the connection's lock)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite


@asynccontextmanager
async def transaction(db: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """BEGIN IMMEDIATE (the file's write lock, against other processes too), COMMIT when the
    block ends, ROLLBACK when it raises (whatever it raises)."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
