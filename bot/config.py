"""Typed, validated settings from a TOML file plus ``STANCEBOT_<SECTION>_<KEY>`` environment overrides.

The bot token is never read from the TOML file: it comes from ``DISCORD_TOKEN`` or from a file named by
``bot.token_file``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from bot.core.errors import ConfigError

if TYPE_CHECKING:
    from bot.core.encoder import SentenceEncoder
    from bot.core.registry import ModelRegistry
    from bot.core.shipped import ModelLibrary

ENV_PREFIX = "STANCEBOT_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BotSettings(_Section):
    """Discord connection and behaviour."""

    token_file: str = ""
    guild_ids: list[int] = Field(default_factory=list)
    moderator_role: str = ""
    react_to_replies: bool = False
    tally_ephemeral: bool = True
    count_mode: Literal["member", "reply"] = "member"
    message_content_intent: bool = True
    shard_count: int = Field(default=0, ge=0, le=65_536)
    shard_ids: list[int] = Field(default_factory=list)
    heartbeat_timeout: float = Field(default=60.0, ge=10.0, le=600.0)

    @field_validator("shard_ids")
    @classmethod
    def _shards_in_range(cls, value: list[int], info: ValidationInfo) -> list[int]:
        count = info.data.get("shard_count", 0)
        if value and not count:
            raise ValueError("needs bot.shard_count (the total number of shards across processes)")
        if any(not 0 <= shard < count for shard in value) or len(set(value)) != len(value):
            raise ValueError(f"must be distinct shard numbers from 0 to {count - 1}")
        return value


class DatabaseSettings(_Section):
    """Where stances are stored."""

    url: str = "sqlite+aiosqlite:///stancebot.db"

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty; use e.g. sqlite+aiosqlite:///stancebot.db")
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value


class ModelSettings(_Section):
    """The stance model."""

    name: str = ""
    build_dir: str = "models/build"
    #: Use the trained models shipped in the package for prompts that have no model in ``build_dir/shipped``.
    shipped: bool = True
    #: Read replies in other languages (Japanese first) with the multilingual heads; off: they are ``unclear``.
    multilingual: bool = True
    unclear_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    batch_size: int = Field(default=32, ge=1, le=512)
    max_wait_ms: int = Field(default=50, ge=0, le=5000)
    max_chars: int = Field(default=2000, ge=50, le=100_000)
    max_queue: int = Field(default=2000, ge=1, le=1_000_000)
    #: Under a backlog, how many queued replies one batch may take (the encoder sorts them by length).
    backlog_window: int = Field(default=256, ge=1, le=100_000)
    backend: Literal["torch", "onnx"] = "onnx"
    #: int8 encoder weights: ``"auto"`` = on the ONNX backend when the CPU has VNNI (about 2x fp32 there, no
    #: measurable accuracy cost on our test splits), else fp32.
    quantize: bool | Literal["auto"] = "auto"
    onnx_cache_dir: str = "models/build/onnx"
    #: Intra-op threads per ONNX session (0: one per session when there are several, else one per core); on torch,
    #: torch's thread count (0: one per core).
    threads: int = Field(default=0, ge=0, le=256)
    #: ONNX Runtime sessions that run a batch's texts side by side (0: one per core).
    sessions: int = Field(default=0, ge=0, le=64)
    #: ONNX: texts per inference call inside a batch, after sorting by length (small: almost no padding); torch: 32.
    inference_batch: int = Field(default=4, ge=1, le=512)


class PromptSettings(_Section):
    """Where prompt files live."""

    #: Empty: the seed prompts shipped in the package.
    dir: str = ""


class ModerationSettings(_Section):
    """Declared stances and the review queue."""

    declare_buttons: bool = True
    declared_overrides: bool = True
    review_below: float = Field(default=0.6, ge=0.0, le=1.0)


class LearningSettings(_Section):
    """Learning from the server: a prompt's own head trained on its members' and moderators' labels."""

    enabled: bool = True
    min_labels: int = Field(default=30, ge=10, le=100_000)
    retrain_step: int = Field(default=20, ge=1, le=100_000)


class PrivacySettings(_Section):
    """How long reply text is kept."""

    retention_days: int = Field(default=0, ge=0, le=36_500)
    purge_interval_minutes: int = Field(default=60, ge=1, le=10_080)


class PipelineSettings(_Section):
    """Batched writes, the on-disk spool used while the database is down, retries and catch-up."""

    spool_dir: str = "data/spool"
    spool_max_mb: int = Field(default=64, ge=1, le=100_000)
    write_batch_size: int = Field(default=200, ge=1, le=5000)
    write_max_wait_ms: int = Field(default=5, ge=0, le=1000)
    retry_initial_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_s: float = Field(default=30.0, gt=0, le=3600)
    max_attempts: int = Field(default=5, ge=1, le=100)
    sweep_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    catch_up: bool = True
    catch_up_overlap_s: int = Field(default=300, ge=0, le=86_400)


class MetricsSettings(_Section):
    """Prometheus ``/metrics`` and ``/health`` on a local port."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65_535)


class GeneralSettings(_Section):
    """Logging, locale and process tuning."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    timezone: str = "UTC"
    #: Move the objects alive once the bot is set up (libraries, the model) out of the cyclic garbage collector's
    #: reach (``gc.freeze``), so that its full collections stop stalling the event loop.
    freeze_gc: bool = True
    #: On SIGTERM/SIGINT, the longest ``run`` and ``sandbox`` take to finish what is in flight and exit.
    shutdown_timeout_s: float = Field(default=8.0, gt=0, le=3600)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as 'Europe/Berlin'") from None
        return value


class Settings(_Section):
    """All settings."""

    general: GeneralSettings = GeneralSettings()
    bot: BotSettings = BotSettings()
    database: DatabaseSettings = DatabaseSettings()
    model: ModelSettings = ModelSettings()
    prompts: PromptSettings = PromptSettings()
    moderation: ModerationSettings = ModerationSettings()
    learning: LearningSettings = LearningSettings()
    privacy: PrivacySettings = PrivacySettings()
    pipeline: PipelineSettings = PipelineSettings()
    metrics: MetricsSettings = MetricsSettings()

    def path(self, value: str) -> Path:
        """A configured path as a :class:`Path` (:func:`load_settings` has already made the configured ones
        absolute; one given otherwise resolves against the working folder)."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path.cwd() / p

    def prompts_dir(self) -> Path:
        """The prompt folder: ``prompts.dir``, or the seed prompts shipped in the package."""
        from bot.assets import prompts_dir

        return self.path(self.prompts.dir) if self.prompts.dir else prompts_dir()

    def model_roots(self) -> list[Path]:
        """Folders of bot-ready models, searched in order: what ``stancebot train`` built here, then the shipped."""
        from bot.assets import shipped_models_dir

        roots = [self.path(self.model.build_dir) / "shipped"]
        return [*roots, shipped_models_dir()] if self.model.shipped else roots


def resolve_quantize(settings: Settings) -> bool:
    """Whether the encoder runs int8: ``model.quantize``, with ``"auto"`` meaning ONNX on a CPU with VNNI."""
    if settings.model.quantize == "auto":
        from bot.core.onnx_export import cpu_has_vnni

        return settings.model.backend == "onnx" and cpu_has_vnni()
    return bool(settings.model.quantize)


def model_library(settings: Settings) -> ModelLibrary:
    """The bot-ready models the settings point at (see :meth:`Settings.model_roots`)."""
    from bot.core.shipped import ModelLibrary

    return ModelLibrary(settings.model_roots())


def make_encoder(
    settings: Settings, model: str | None = None, *, library: ModelLibrary | None = None
) -> SentenceEncoder:
    """The sentence encoder as configured (``[model]`` name, backend, quantization, ONNX cache folder).

    On ONNX Runtime with the default encoder it is the shipped int8 one (``models/shipped/encoder``): no torch, no
    export. A named encoder (a folder or hub id), or the torch backend, needs the ``train`` extra.
    """
    from bot.core.encoder import SentenceEncoder
    from bot.core.shipped import BASE_ENCODER

    name = settings.model.name if model is None else model
    if settings.model.backend == "onnx" and not name:
        found = (library or model_library(settings)).find(BASE_ENCODER)
        if found is not None:
            store, entry = found
            return SentenceEncoder(
                str(entry.config.get("encoder_name", entry.version)),
                onnx_file=entry.weights,
                tokenizer_dir=store.tokenizer_dir,
                quantize=True,
                threads=settings.model.threads,
                sessions=settings.model.sessions,
                batch_size=settings.model.inference_batch,
            )
    return SentenceEncoder(
        name,
        backend=settings.model.backend,
        quantize=resolve_quantize(settings),
        threads=settings.model.threads,
        sessions=settings.model.sessions,
        batch_size=settings.model.inference_batch,
        cache_dir=settings.path(settings.model.onnx_cache_dir),
    )


def model_registry(settings: Settings, *, encoder: SentenceEncoder | None = None) -> ModelRegistry:
    """Which model serves each prompt, as configured: on ONNX Runtime the bot-ready models (checked against their
    manifests first: :class:`~bot.core.shipped.ModelIntegrityError` names a bad file), on torch the build folders.
    ``encoder`` replaces the shared encoder (tests pass one they already loaded)."""
    from bot.core.registry import ModelRegistry

    library = model_library(settings)
    if settings.model.backend == "onnx":
        library.verify()
    if encoder is None:
        encoder = make_encoder(settings, library=library)
    if getattr(encoder, "backend", "") == "torch" and settings.model.threads:  # torch's threads (default: a core each)
        import torch

        torch.set_num_threads(settings.model.threads)
    onnx = settings.model.backend == "onnx"
    return ModelRegistry(
        encoder,
        library=library if onnx else None,
        build_dir=None if onnx else settings.path(settings.model.build_dir),
        threshold=settings.model.unclear_threshold,
        max_chars=settings.model.max_chars,
        multilingual=settings.model.multilingual,
    )


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for section_name, field_info in Settings.model_fields.items():
        section_model = field_info.annotation
        assert isinstance(section_model, type) and issubclass(section_model, BaseModel)
        for key in section_model.model_fields:
            env_name = f"{ENV_PREFIX}{section_name}_{key}".upper()
            if env_name in environ:
                raw = environ[env_name]
                section = data.setdefault(section_name, {})
                if not isinstance(section, dict):
                    raise ConfigError(f"[{section_name}] must be a table.")
                section[key] = _parse_env_value(raw)
    return data


def _parse_env_value(raw: str) -> Any:
    """Environment values are TOML literals where they parse (numbers, booleans, lists), text otherwise."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read settings from ``path`` (optional) and the environment; raise :class:`ConfigError` naming bad keys.

    Relative paths in the settings (``bot.token_file``, a SQLite ``database.url``, ``pipeline.spool_dir``,
    ``model.build_dir``, ``model.onnx_cache_dir``, ``prompts.dir``) are made absolute here: against the config
    file's folder when there is a config file, else against the working folder (see :data:`PATH_KEYS`).
    """
    environ = dict(os.environ) if environ is None else environ
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        data = _read_toml(path)
        base = path.resolve().parent
    for section_name, section in data.items():
        if section_name in Settings.model_fields and not isinstance(section, dict):
            raise ConfigError(f"Invalid configuration: [{section_name}] must be a table (a section), not a value.")
    if "token" in data.get("bot", {}):
        raise ConfigError(
            "[bot] token must not be in the config file; set DISCORD_TOKEN or point bot.token_file at a file."
        )
    data = _apply_env(data, environ)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    return resolve_paths(settings, base)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist (copy config.example.toml).") from None
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read ({exc.strerror or exc}).") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Config file {path} is not UTF-8 text (byte {exc.start + 1}); save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}.") from None


#: Settings that name a file or folder: (section, key). A relative one resolves against the config file's folder.
PATH_KEYS = (
    ("bot", "token_file"),
    ("pipeline", "spool_dir"),
    ("model", "build_dir"),
    ("model", "onnx_cache_dir"),
    ("prompts", "dir"),
)
SQLITE_PREFIX = "sqlite+aiosqlite:///"


def _absolute(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def resolve_paths(settings: Settings, base: Path) -> Settings:
    """``settings`` with every relative path (see :data:`PATH_KEYS`, and a SQLite file in ``database.url``) made
    absolute against ``base``; empty values (meaning "none" or "the default") stay empty."""
    updates: dict[str, BaseModel] = {}
    for section_name, key in PATH_KEYS:
        section = updates.get(section_name) or getattr(settings, section_name)
        value = getattr(section, key)
        if value:
            updates[section_name] = section.model_copy(update={key: _absolute(value, base)})
    url = settings.database.url
    if url.startswith(SQLITE_PREFIX):
        file, sep, query = url.removeprefix(SQLITE_PREFIX).partition("?")
        if file and file != ":memory:" and not file.startswith("file:"):
            updates["database"] = settings.database.model_copy(
                update={"url": SQLITE_PREFIX + _absolute(file, base) + sep + query}
            )
    return settings.model_copy(update=updates) if updates else settings


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "is not a known setting"
        parts.append(f"{key}: {msg}")
    return "Invalid configuration: " + "; ".join(parts)


def read_token(settings: Settings, environ: dict[str, str] | None = None) -> str:
    """The bot token from ``DISCORD_TOKEN`` or ``bot.token_file``; raises :class:`ConfigError` if neither has one."""
    environ = dict(os.environ) if environ is None else environ
    token = environ.get("DISCORD_TOKEN", "").strip()
    if token:
        return token
    if settings.bot.token_file:
        token_path = settings.path(settings.bot.token_file)
        try:
            token = token_path.read_bytes().decode("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"bot.token_file {token_path} cannot be read ({exc.strerror or exc}).") from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"bot.token_file {token_path} is not UTF-8 text; it should hold only the token."
            ) from None
        if token:
            return token
        raise ConfigError(f"bot.token_file {token_path} is empty.")
    raise ConfigError(
        "No Discord token: set DISCORD_TOKEN or bot.token_file. Without a token, try `stancebot sandbox`."
    )
