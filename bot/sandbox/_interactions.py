"""Interactions: the payloads a user's slash command, click or modal submit produce, and their outcomes."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._permissions import DM_APP_PERMISSIONS
from ._world import FLAG_EPHEMERAL, JSON, Channel, Guild, Member, Role, User, World

TYPE_APPLICATION_COMMAND = 2
TYPE_MESSAGE_COMPONENT = 3
TYPE_AUTOCOMPLETE = 4
TYPE_MODAL_SUBMIT = 5

CALLBACK_MESSAGE = 4
CALLBACK_DEFERRED_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_AUTOCOMPLETE = 8
CALLBACK_MODAL = 9

OPTION_SUBCOMMAND = 1
OPTION_SUBCOMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_USER = 6
OPTION_CHANNEL = 7
OPTION_ROLE = 8
OPTION_MENTIONABLE = 9
OPTION_NUMBER = 10

COMPONENT_ACTION_ROW = 1
COMPONENT_LABEL = 18
COMPONENT_TEXT_INPUT = 4

ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


@dataclass(eq=False)
class InteractionResult:
    """What the bot answered to one interaction: the callback, the original message and any followups."""

    interaction: JSON
    type: int | None = None
    data: JSON = field(default_factory=dict)
    message: JSON | None = None
    followups: list[JSON] = field(default_factory=list)

    @property
    def deferred(self) -> bool:
        """Whether the callback only deferred (thinking, or a deferred message update)."""
        return self.type in (CALLBACK_DEFERRED_MESSAGE, CALLBACK_DEFERRED_UPDATE)

    @property
    def ephemeral(self) -> bool:
        """Whether the response is only visible to the user (flag 64)."""
        flags = self.message["flags"] if self.message is not None else self.data.get("flags") or 0
        return bool(flags & FLAG_EPHEMERAL)

    @property
    def content(self) -> str:
        """The response's text: the original message after any edits, else the callback data."""
        if self.message is not None:
            return str(self.message.get("content") or "")
        return str(self.data.get("content") or "")

    @property
    def embeds(self) -> list[JSON]:
        """The response's embeds, like :attr:`content`."""
        source = self.message if self.message is not None else self.data
        return list(source.get("embeds") or [])

    @property
    def choices(self) -> list[JSON]:
        """Autocomplete choices (callback type 8)."""
        return list(self.data.get("choices") or []) if self.type == CALLBACK_AUTOCOMPLETE else []

    @property
    def modal(self) -> JSON | None:
        """The modal the bot opened (callback type 9)."""
        return self.data if self.type == CALLBACK_MODAL else None


@dataclass(eq=False)
class PendingInteraction:
    """An interaction sent to the bot, its token, and the events that tell waiters about its answers."""

    payload: JSON
    channel: Channel
    source_message: JSON | None = None
    #: For a modal submit: the interaction whose answer opened the modal.
    trigger: PendingInteraction | None = None
    created: float = field(default_factory=time.monotonic)
    result: InteractionResult = field(init=False)
    acknowledged: asyncio.Event = field(default_factory=asyncio.Event)
    activity: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.result = InteractionResult(self.payload)

    @property
    def id(self) -> int:
        """The interaction id."""
        return int(self.payload["id"])

    @property
    def token(self) -> str:
        """The interaction token (also the followup webhook's token)."""
        return str(self.payload["token"])

    def touch(self, *, answered: bool = False) -> None:
        """Note a request made for this interaction (``answered``: it carried visible content)."""
        self.activity.set()
        if answered:
            self.answered.set()


class Interactions:
    """Builds interaction payloads and keeps the ones in flight, by id and by token."""

    def __init__(self, world: World, *, ack_deadline: float) -> None:
        self.world = world
        #: Seconds the bot has for the first callback, as on Discord (3 s); later it is "Unknown interaction".
        self.ack_deadline = ack_deadline
        #: Seconds an interaction token takes followups and edits, as on Discord (15 minutes).
        self.token_lifetime = 15 * 60.0
        self.by_id: dict[int, PendingInteraction] = {}
        self.by_token: dict[str, PendingInteraction] = {}

    def open(
        self,
        kind: int,
        data: JSON,
        guild: Guild | None,
        channel: Channel,
        user: Member | User,
        *,
        message: JSON | None = None,
    ) -> PendingInteraction:
        """Register an interaction of ``kind`` by ``user`` in ``channel`` (components: on ``message``)."""
        interaction_id = self.world.snowflakes.next()
        payload: JSON = {
            "id": str(interaction_id),
            "application_id": str(self.world.application_id),
            "type": kind,
            "data": data,
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "token": f"sandbox-interaction-{interaction_id}-{secrets.token_urlsafe(24)}",
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if guild is not None and isinstance(user, Member):
            bot_member = guild.members[self.world.bot_user.id]
            payload |= {
                "guild_id": str(guild.id),
                "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
                "guild_locale": "en-US",
                "member": user.payload(permissions=guild.channel_permissions_of(user, channel)),
                "app_permissions": str(guild.channel_permissions_of(bot_member, channel)),
                "authorizing_integration_owners": {"0": str(guild.id)},
                "context": 0,
            }
        else:
            person = user.user if isinstance(user, Member) else user
            payload |= {
                "user": person.payload(),
                "app_permissions": str(DM_APP_PERMISSIONS),
                "authorizing_integration_owners": {"0": "0"},
                "context": 1,
            }
        if message is not None:
            payload["message"] = message
        pending = PendingInteraction(payload, channel, message)
        self.by_id[pending.id] = pending
        self.by_token[pending.token] = pending
        return pending

    def command_data(
        self,
        command: JSON,
        guild: Guild | None,
        subcommand: str | None,
        options: Mapping[str, object],
        *,
        focused: str | None = None,
    ) -> JSON:
        """``data`` of an APPLICATION_COMMAND (or, with ``focused``, AUTOCOMPLETE) interaction."""
        data: JSON = {"id": command["id"], "name": command["name"], "type": command.get("type", 1)}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        container, schema = data, command.get("options") or []
        for part in (subcommand or "").split():
            spec = _option_spec(schema, part, command["name"])
            if spec["type"] not in (OPTION_SUBCOMMAND, OPTION_SUBCOMMAND_GROUP):
                raise LookupError(f"/{command['name']}: {part!r} is not a subcommand")
            node: JSON = {"type": spec["type"], "name": part, "options": []}
            container["options"] = [node]
            container, schema = node, spec.get("options") or []
        resolved: dict[str, JSON] = {}
        values = []
        for name, value in options.items():
            spec = _option_spec(schema, name, command["name"])
            if name == focused:
                values.append({"type": spec["type"], "name": name, "value": str(value), "focused": True})
            else:
                converted = self._value(spec, value, guild, resolved)
                values.append({"type": spec["type"], "name": name, "value": converted})
        missing = [s["name"] for s in schema if s.get("required") and s["name"] not in options]
        if missing and focused is None:
            raise ValueError(f"/{command['name']}: missing required option(s) {missing}")
        container["options"] = values
        if resolved:
            data["resolved"] = resolved
        return data

    def _value(self, spec: JSON, value: object, guild: Guild | None, resolved: dict[str, JSON]) -> object:
        kind = spec["type"]
        if kind == OPTION_STRING:
            return str(value)
        if kind == OPTION_INTEGER and isinstance(value, int | str):
            return int(value)
        if kind == OPTION_NUMBER and isinstance(value, int | float | str):
            return float(value)
        if kind == OPTION_BOOLEAN:
            return bool(value)
        if kind in (OPTION_USER, OPTION_MENTIONABLE) and isinstance(value, Member | User):
            member = value if isinstance(value, Member) else None
            user = value.user if isinstance(value, Member) else value
            resolved.setdefault("users", {})[str(user.id)] = user.payload()
            if member is not None and guild is not None:
                perms = guild.permissions_of(member)
                members = resolved.setdefault("members", {})
                members[str(user.id)] = member.payload(with_user=False, permissions=perms)
            return str(user.id)
        if kind in (OPTION_ROLE, OPTION_MENTIONABLE) and isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            return str(value.id)
        if kind == OPTION_CHANNEL and isinstance(value, Channel):
            perms = guild.permissions_of(guild.members[self.world.bot_user.id]) if guild else 0
            resolved.setdefault("channels", {})[str(value.id)] = value.payload() | {"permissions": str(perms)}
            return str(value.id)
        if kind in (OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE) and isinstance(value, int):
            return str(value)
        raise TypeError(f"option {spec['name']!r} (type {kind}) cannot take {value!r}")

    @staticmethod
    def modal_components(modal: JSON, values: Mapping[str, str | list[str]]) -> list[JSON]:
        """The submitted components of a modal the bot opened, filled with ``values`` by custom id."""

        seen: set[str] = set()

        def submitted(component: JSON) -> JSON | None:
            custom_id = component.get("custom_id")
            if custom_id is None:
                return None
            seen.add(custom_id)
            value = values.get(custom_id, "")
            if component["type"] == COMPONENT_TEXT_INPUT:
                return {"type": COMPONENT_TEXT_INPUT, "custom_id": custom_id, "value": str(value)}
            picked = [value] if isinstance(value, str) and value else list(value)
            return {"type": component["type"], "custom_id": custom_id, "values": picked}

        rows: list[JSON] = []
        for top in modal.get("components") or []:
            if top["type"] == COMPONENT_ACTION_ROW:
                inner = [item for item in map(submitted, top.get("components") or []) if item]
                rows.append({"type": COMPONENT_ACTION_ROW, "components": inner})
            elif top["type"] == COMPONENT_LABEL and (item := submitted(top["component"])):
                rows.append({"type": COMPONENT_LABEL, "component": item})
        if unknown := set(values) - seen:
            raise LookupError(f"the modal has no inputs {sorted(unknown)}")
        return rows

    async def wait(
        self,
        pending: PendingInteraction,
        *,
        timeout: float,  # noqa: ASYNC109 - a deadline for two waits in a row
        settle: float,
    ) -> InteractionResult:
        """Wait for the callback (and, after a defer, the first edit or followup), then for quiet."""
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(pending.acknowledged.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"the bot did not answer interaction {pending.payload['data']!r}") from None
        if pending.result.type == CALLBACK_DEFERRED_MESSAGE:
            try:
                await asyncio.wait_for(pending.answered.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return pending.result
        while True:
            pending.activity.clear()
            try:
                await asyncio.wait_for(pending.activity.wait(), settle)
            except TimeoutError:
                return pending.result


def _option_spec(schema: list[JSON], name: str, command: str) -> JSON:
    for spec in schema:
        if spec["name"] == name:
            return spec
    raise LookupError(f"/{command} has no option or subcommand {name!r}")
