"""Settings: defaults, env overrides, and one clear message for each kind of bad config."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.assets import assets_dir, example_config
from bot.config import load_settings, read_token, resolve_quantize
from bot.core.errors import ConfigError


def test_example_config_is_valid() -> None:
    settings = load_settings(assets_dir() / "config.example.toml", environ={})
    assert settings.database.url.startswith("sqlite+aiosqlite://")


def test_env_overrides_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nunclear_threshold = 0.4\n", encoding="utf-8")
    settings = load_settings(
        cfg, environ={"STANCEBOT_MODEL_UNCLEAR_THRESHOLD": "0.7", "STANCEBOT_BOT_GUILD_IDS": "[1, 2]"}
    )
    assert settings.model.unclear_threshold == 0.7
    assert settings.bot.guild_ids == [1, 2]


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ('backend = "onnx"\nquantize = "auto"', {}, "vnni"),
        ('backend = "torch"\nquantize = "auto"', {}, False),
        ('backend = "onnx"\nquantize = false', {}, False),
        ('backend = "torch"\nquantize = true', {}, True),
        ('backend = "onnx"', {"STANCEBOT_MODEL_QUANTIZE": "false"}, False),
        ('backend = "onnx"', {"STANCEBOT_MODEL_QUANTIZE": "true"}, True),
    ],
)
def test_quantize_auto_means_onnx_on_a_vnni_cpu(
    tmp_path: Path, toml: str, env: dict[str, str], expected: object
) -> None:
    from bot.core.onnx_export import cpu_has_vnni

    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[model]\n{toml}\n", encoding="utf-8")
    settings = load_settings(cfg, environ=env)
    assert resolve_quantize(settings) is (cpu_has_vnni() if expected == "vnni" else expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[database]\nurl = ""\n', r"database\.url: is empty"),
        ('[database]\nurl = "mysql://x"\n', r"database\.url: must start with"),
        ("[model]\nunclear_threshold = 3\n", r"model\.unclear_threshold: Input should be less than or equal to 1"),
        ("[bot]\nnonsense = 1\n", r"bot\.nonsense: is not a known setting"),
        ('[general]\ntimezone = "Mars/Base"\n', r"general\.timezone: 'Mars/Base' is not an IANA time zone"),
        ("[bot\n", "is not valid TOML"),
        ('[bot]\ntoken = "abc"\n', "token must not be in the config file"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_token_from_env_or_file(tmp_path: Path) -> None:
    settings = load_settings(None, environ={})
    assert read_token(settings, environ={"DISCORD_TOKEN": " abc "}) == "abc"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n", encoding="utf-8")
    settings = load_settings(None, environ={"STANCEBOT_BOT_TOKEN_FILE": str(token_file)})
    assert read_token(settings, environ={}) == "from-file"
    with pytest.raises(ConfigError, match="No Discord token"):
        read_token(load_settings(None, environ={}), environ={})


def test_the_example_config_documents_every_setting_and_only_settings() -> None:
    """config.example.toml and the settings model name the same sections and keys, both ways, each key with its
    default value and a comment above it (or above its group)."""
    import tomllib

    from bot.config import Settings

    text = example_config()
    example = tomllib.loads(text)
    model = {name: set(field.annotation.model_fields) for name, field in Settings.model_fields.items()}  # type: ignore[union-attr]
    assert set(example) == set(model)
    for section, keys in model.items():
        assert set(example[section]) == keys, section
        defaults = getattr(Settings(), section)
        for key in keys:
            assert example[section][key] == getattr(defaults, key), f"{section}.{key}"
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            above = next(
                prior for prior in reversed(lines[:number]) if not ("=" in prior and not prior.startswith("#"))
            )
            assert above.startswith(("#", "[")), line
