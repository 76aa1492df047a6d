"""Errors the domain raises; each carries a message that is safe to show to a Discord user."""


class StancebotError(Exception):
    """Base class: ``str(error)`` is a short, user-safe explanation."""


class ConfigError(StancebotError):
    """The configuration file or an environment override is invalid."""


class PromptError(StancebotError):
    """A prompt definition is invalid or a prompt id is unknown."""


class UnknownPromptError(PromptError):
    """No prompt has the requested id."""

    def __init__(self, prompt_id: str, known: list[str]) -> None:
        hint = ", ".join(sorted(known)) or "none"
        super().__init__(f"Unknown prompt {prompt_id!r}. Known prompts: {hint}.")
        self.prompt_id = prompt_id


class LabelError(StancebotError):
    """A stance label is not one the prompt counts."""


class StorageError(StancebotError):
    """The database could not be reached or refused a write."""
