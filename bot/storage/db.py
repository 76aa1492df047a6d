"""Engine, sessions and schema upgrades (Alembic, run in-process so CLI, bot and tests share one path)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from sqlalchemy import event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.assets import migrations_dir
from bot.core.errors import StorageError

log = logging.getLogger(__name__)

MIGRATIONS = migrations_dir()

#: What a database that is down or unreachable raises.
UNAVAILABLE: tuple[type[BaseException], ...] = (OperationalError, DBAPIError, OSError)
UNAVAILABLE_MESSAGE = "The database is unavailable right now; nothing was lost, try again shortly."


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
    *,
    errors: tuple[type[BaseException], ...] = UNAVAILABLE,
    log_errors: bool = True,
) -> AsyncIterator[AsyncSession]:
    """One session in one transaction; ``errors`` become a :class:`StorageError` with a message fit for a user."""
    try:
        async with sessions() as session, session.begin():
            yield session
    except errors as exc:
        if log_errors:
            log.error("Database error: %s", exc.__class__.__name__)
        raise StorageError(UNAVAILABLE_MESSAGE) from exc


def dialect_of(session: AsyncSession) -> str:
    """``postgresql`` or ``sqlite``: the database a session talks to."""
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def insert_for(session: AsyncSession, table: type) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with the dialect's ``ON CONFLICT`` support."""
    return postgresql.insert(table) if dialect_of(session) == "postgresql" else sqlite.insert(table)


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets foreign keys on and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return create_async_engine(url, echo=echo, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that do no implicit IO after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration pointing at the packaged migrations (no ``alembic.ini`` needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _run(connection: Connection, cfg: Config, revision: str, action: str) -> None:
    cfg.attributes["connection"] = connection
    if action == "upgrade":
        command.upgrade(cfg, revision)
    else:
        command.downgrade(cfg, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (``head`` by default)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    async with engine.begin() as conn:
        await conn.run_sync(_run, cfg, revision, "upgrade")
    log.info("Database schema is at %s", revision)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Take the schema down to ``revision``."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    async with engine.begin() as conn:
        await conn.run_sync(_run, cfg, revision, "downgrade")


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a connection failure into a :class:`StorageError` naming the database (password hidden)."""
    try:
        yield
    except (OperationalError, DBAPIError, OSError) as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        raise StorageError(f"Cannot reach the database at {shown}: {reason}") from None


#: The database drivers Stancebot runs on.
DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


def check_url(url: str, *, must_exist: bool = False) -> str:
    """``url`` if Stancebot can use it, else a :class:`StorageError` naming it (password hidden): a URL SQLAlchemy
    can parse, one of :data:`DRIVERS`, and for SQLite a file whose folder exists (and, with ``must_exist``, the
    file itself: commands that only read never create an empty database by mistake)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise StorageError(f"{url!r} is not a database URL; use e.g. sqlite+aiosqlite:///stancebot.db.") from None
    if parsed.drivername not in DRIVERS:
        raise StorageError(
            f"Database URL {parsed.render_as_string(hide_password=True)}: unknown driver {parsed.drivername!r}; "
            "use sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB."
        )
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if must_exist and not path.is_file():
            raise StorageError(f"There is no SQLite database at {path} (this command does not create one).")
        if not path.parent.is_dir():
            raise StorageError(f"The folder of the SQLite database {path} does not exist; create it first.")
    return url


def known_revision(revision: str, *, allow: tuple[str, ...] = ("head", "base")) -> str:
    """``revision`` if it names a migration (an id, a unique prefix of one, or one of ``allow``), else a
    :class:`StorageError` listing the known ones."""
    script = ScriptDirectory.from_config(alembic_config())
    known = [rev.revision for rev in script.walk_revisions()]
    if revision in allow:
        return revision
    if revision and not revision.startswith(("-", "+")) and revision not in ("head", "base", "heads"):
        try:
            found = script.revision_map.get_revisions(revision)
        except RevisionError:
            found = ()
        if len(found) == 1 and found[0] is not None and not isinstance(found[0], str):
            return found[0].revision
    names = ", ".join([*allow, *reversed(known)])
    raise StorageError(f"Unknown schema revision {revision!r}; known: {names}.")


def migrations_between(current: str | None, target: str) -> list[tuple[str, str]]:
    """The migrations a downgrade from ``current`` to ``target`` undoes, newest first: (revision, description)."""
    script = ScriptDirectory.from_config(alembic_config())
    if current is None:
        return []
    undone = []
    for rev in script.walk_revisions(base="base", head=current):
        if rev.revision == target:
            break
        undone.append((rev.revision, (rev.doc or "").strip()))
    return undone


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at (``None``: no Stancebot schema)."""

    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)
