"""What every store is built on: one sessionmaker, the counting rules and the review threshold, passed in once."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.counting import CountingRules
from bot.storage.db import UNAVAILABLE, transaction


@dataclass
class Database:
    """One database as the stores see it. Every store method is one :meth:`transaction`."""

    sessions: async_sessionmaker[AsyncSession]
    rules: CountingRules = field(default_factory=CountingRules)
    #: Model stances below this confidence go to the review queue (besides those the gate made ``unclear``).
    review_below: float = 0.0

    def transaction(
        self, *, errors: tuple[type[BaseException], ...] = UNAVAILABLE, log_errors: bool = True
    ) -> AbstractAsyncContextManager[AsyncSession]:
        """One session in one transaction; ``errors`` (a database that is down) raise :class:`StorageError`."""
        return transaction(self.sessions, errors=errors, log_errors=log_errors)


class Store:
    """A store over one :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """One session in one transaction (a database that is down raises :class:`StorageError`)."""
        return self.db.transaction()
