"""The one place that reads and writes the database: :class:`Repository` holds one store per concept, all over
one :class:`bot.storage.base.Database` (sessions, counting rules, review threshold). Every store method is one
transaction and returns plain dataclasses (:mod:`bot.storage.records`), never ORM objects.

* :attr:`Repository.writes` (:mod:`bot.storage.writes`): replies, model stances, edits, deletions, declared
  stances, and the rules every write applies (counting, review, locks, opt-outs);
* :attr:`Repository.prompts` (:mod:`bot.storage.prompts`): prompt definitions and their posts;
* :attr:`Repository.tallies` (:mod:`bot.storage.tallies`): current stances and tallies;
* :attr:`Repository.guilds` (:mod:`bot.storage.guilds`): guild settings (time zone, moderation channels);
* :attr:`Repository.schedules` (:mod:`bot.storage.schedules`): digest and prompt schedules, claims;
* :attr:`Repository.digests` (:mod:`bot.storage.digests`): digest figures;
* :attr:`Repository.moderation` (:mod:`bot.storage.moderation`): relabels, audit log, review queue;
* :attr:`Repository.privacy` (:mod:`bot.storage.privacy`): exports, opt-outs, forget-me, retention;
* :attr:`Repository.learning` (:mod:`bot.storage.learning`): a prompt's labelled replies, the heads learned from
  them, re-classification.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.counting import CountingRules
from bot.storage.base import Database
from bot.storage.digests import DigestQueries
from bot.storage.guilds import GuildSettings
from bot.storage.learning import Learning
from bot.storage.moderation import Moderation
from bot.storage.privacy import Privacy
from bot.storage.prompts import Prompts
from bot.storage.records import CountMode
from bot.storage.schedules import Schedules
from bot.storage.tallies import Tallies
from bot.storage.writes import Writes


class Repository:
    """Every store over one database."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        count_mode: CountMode = "member",
        declared_overrides: bool = True,
        review_below: float = 0.0,
    ) -> None:
        self.db = Database(sessions, CountingRules(count_mode, declared_overrides), review_below)
        self.sessions = sessions
        self.writes = Writes(self.db)
        self.prompts = Prompts(self.db)
        self.tallies = Tallies(self.db)
        self.guilds = GuildSettings(self.db)
        self.schedules = Schedules(self.db)
        self.digests = DigestQueries(self.db, self.tallies)
        self.moderation = Moderation(self.db)
        self.privacy = Privacy(self.db)
        self.learning = Learning(self.db)

    @property
    def rules(self) -> CountingRules:
        """How this database's tallies count (``bot.count_mode``, ``moderation.declared_overrides``)."""
        return self.db.rules

    @property
    def review_below(self) -> float:
        """Model stances below this confidence go to the review queue."""
        return self.db.review_below

    @review_below.setter
    def review_below(self, value: float) -> None:
        self.db.review_below = value
