"""LoopbackDiscord: a Discord-compatible gateway and REST server on 127.0.0.1 for the real discord.py client.

The only configuration on the discord.py side is :meth:`LoopbackDiscord.install`, which points
``discord.http.Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` at the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import discord
import yarl
from aiohttp import web

from ._faults import GatewayFaults
from ._gateway import Gateway, GatewaySession
from ._http import RecordedRequest
from ._interactions import (
    CALLBACK_MODAL,
    TYPE_APPLICATION_COMMAND,
    TYPE_AUTOCOMPLETE,
    TYPE_MESSAGE_COMPONENT,
    TYPE_MODAL_SUBMIT,
    InteractionResult,
    Interactions,
    PendingInteraction,
)
from ._permissions import ALL_PERMISSIONS, OVERWRITE_MEMBER, OVERWRITE_ROLE, Overwrite
from ._rest import API_PREFIX, RestApi
from ._world import JSON, Channel, Guild, Member, Role, User, World, iso_now

#: Component types whose interaction data carries ``values`` (the five kinds of select).
_SELECT_TYPES = (3, 5, 6, 7, 8)


class LoopbackDiscord:
    """A local Discord: build a world, let the real bot connect, act as users and inspect what the bot did.

    ``rate_limits=True`` switches on Discord's REST rate limits (``bot.sandbox._ratelimit``); :attr:`faults` and
    :attr:`gateway_faults` make REST answers and the gateway fail on demand (``bot.sandbox._faults``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        message_content_intent_allowed: bool = True,
        ack_deadline: float = 3.0,
        rate_limits: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.world = World(message_content_intent_allowed=message_content_intent_allowed)
        self.gateway = Gateway(self.world)
        self.interactions = Interactions(self.world, ack_deadline=ack_deadline)
        self.rest = RestApi(self.world, self.gateway, self.interactions)
        self.rest.ratelimits.enabled = rate_limits
        #: Planned REST failures (403, 404, 5xx) and gateway faults (op 7, op 9, dropped or zombied sockets).
        self.faults = self.rest.faults
        self.gateway_faults = GatewayFaults(self.gateway)
        self.rest.app.router.add_get("/gateway", self.gateway.handle)
        #: Any token is accepted; this one reads well in logs.
        self.token = "sandbox-token"  # noqa: S105
        self.base_url = ""
        self.gateway_url = ""
        self._runner: web.AppRunner | None = None
        self._saved: tuple[str, yarl.URL] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind the server and fill in :attr:`base_url` and :attr:`gateway_url`."""
        self._runner = web.AppRunner(self.rest.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        origin = f"http://{self.host}:{self.port}"
        self.base_url = origin + API_PREFIX
        self.gateway_url = f"ws://{self.host}:{self.port}/gateway"
        self.rest.origin = origin
        self.gateway.url = self.gateway_url

    async def stop(self) -> None:
        """Close every websocket, stop serving and undo :meth:`install`."""
        if self._runner is not None:
            await self.gateway.close()
            await self._runner.cleanup()
            self._runner = None
        self.uninstall()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def install(self) -> None:
        """Point discord.py's REST base and default gateway at this server."""
        if not self.base_url:
            raise RuntimeError("start() the server before install()")
        if self._saved is None:
            self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = self.base_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    def uninstall(self) -> None:
        """Restore what :meth:`install` changed."""
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None

    # ----------------------------------------------------------------- world

    @property
    def bot_user(self) -> User:
        """The bot's user."""
        return self.world.bot_user

    @property
    def application_id(self) -> int:
        """The application's id (equal to the bot user's id)."""
        return self.world.application_id

    @property
    def guilds(self) -> dict[int, Guild]:
        """Every guild, by id."""
        return self.world.guilds

    @property
    def recommended_shards(self) -> int:
        """The shard count ``GET /gateway/bot`` recommends."""
        return self.rest.recommended_shards

    @recommended_shards.setter
    def recommended_shards(self, value: int) -> None:
        self.rest.recommended_shards = value

    def create_guild(self, name: str) -> Guild:
        """A guild with @everyone, the bot (with its managed role) and an owner; GUILD_CREATE if connected."""
        guild = self.world.create_guild(name)
        self.gateway.dispatch_soon("GUILD_CREATE", guild.payload())
        return guild

    def create_channel(self, guild: Guild, name: str) -> Channel:
        """A text channel; CHANNEL_CREATE if the bot is connected."""
        channel = self.world.create_channel(guild, name)
        self.gateway.dispatch_soon("CHANNEL_CREATE", channel.payload())
        return channel

    def create_member(
        self, guild: Guild, name: str, *, permissions: discord.Permissions | int = 0, bot: bool = False
    ) -> Member:
        """A member whose ``permissions`` come through a role of their own; GUILD_MEMBER_ADD if connected."""
        value = permissions.value if isinstance(permissions, discord.Permissions) else int(permissions)
        member = self.world.create_member(guild, name, permissions=value, bot=bot)
        for role_id in member.role_ids:
            role = guild.roles[role_id].payload()
            self.gateway.dispatch_soon("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role})
        self.gateway.dispatch_soon("GUILD_MEMBER_ADD", member.payload() | {"guild_id": str(guild.id)})
        return member

    def join_guild(self, guild: Guild, user: Member | User) -> Member:
        """An existing user (e.g. a member of another guild) joins ``guild`` (GUILD_MEMBER_ADD)."""
        person = user.user if isinstance(user, Member) else user
        member = guild.members.setdefault(person.id, Member(person, guild.id))
        self.gateway.dispatch_soon("GUILD_MEMBER_ADD", member.payload() | {"guild_id": str(guild.id)})
        return member

    def leave_guild(self, guild: Guild, member: Member) -> None:
        """The member leaves ``guild`` (GUILD_MEMBER_REMOVE); their DMs with the bot stay."""
        guild.members.pop(member.id, None)
        self.gateway.dispatch_soon("GUILD_MEMBER_REMOVE", {"guild_id": str(guild.id), "user": member.user.payload()})

    def create_role(self, guild: Guild, name: str, permissions: discord.Permissions | int = 0) -> Role:
        """A new role (GUILD_ROLE_CREATE if connected); :meth:`give_role` hands it to a member."""
        role = self.world.create_role(guild, name, _bits(permissions))
        self.gateway.dispatch_soon("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role.payload()})
        return role

    def give_role(self, guild: Guild, member: Member, role: Role) -> None:
        """Add ``role`` to the member (GUILD_MEMBER_UPDATE, for clients with the members intent)."""
        if role.id not in member.role_ids:
            member.role_ids.append(role.id)
        self.gateway.dispatch_soon("GUILD_MEMBER_UPDATE", member.payload() | {"guild_id": str(guild.id)})

    def set_overwrite(
        self,
        channel: Channel,
        target: Role | Member,
        *,
        allow: discord.Permissions | int = 0,
        deny: discord.Permissions | int = 0,
    ) -> None:
        """Set the channel's permission overwrite for a role (the guild's id: @everyone) or a member
        (CHANNEL_UPDATE); interactions in the channel (and its threads) then carry the permissions it yields."""
        if channel.guild_id is None or channel.is_thread:
            raise ValueError("overwrites belong to guild channels (threads use their parent's)")
        kind = OVERWRITE_MEMBER if isinstance(target, Member) else OVERWRITE_ROLE
        channel.overwrites[target.id] = Overwrite(target.id, kind, _bits(allow), _bits(deny))
        self.gateway.dispatch_soon("CHANNEL_UPDATE", channel.payload())

    def dm_channel(self, user: Member | User) -> Channel:
        """The DM channel between the bot and ``user`` (the bot gets it from ``POST /users/@me/channels``)."""
        return self.world.open_dm(user.user if isinstance(user, Member) else user)

    def _channel(self, channel_id: int) -> Channel:
        channel = self.world.channels.get(channel_id)
        if channel is None:
            raise LookupError(f"no channel {channel_id}")
        return channel

    # ----------------------------------------------------------------- users' actions

    async def send_message(
        self,
        channel_or_thread_id: int,
        author: Member | User,
        content: str,
        *,
        message_id: int | None = None,
        mentions_bot: bool = False,
    ) -> JSON:
        """A user posts (MESSAGE_CREATE); ``mentions_bot`` prefixes ``<@bot>`` unless the content has it."""
        channel = self._channel(channel_or_thread_id)
        user = author.user if isinstance(author, Member) else author
        mention = f"<@{self.bot_user.id}>"
        if mentions_bot and mention not in content and f"<@!{self.bot_user.id}>" not in content:
            content = f"{mention} {content}"
        message = self.world.build_message(channel, user, content, message_id=message_id)
        await self.rest.publish(channel, message)
        return message

    async def edit_message(self, channel_id: int, message_id: int, content: str) -> JSON:
        """A user edits a message (MESSAGE_UPDATE)."""
        message = self.world.find_message(channel_id, message_id)
        if message is None:
            raise LookupError(f"no message {message_id} in channel {channel_id}")
        message["content"] = content
        message["edited_timestamp"] = iso_now()
        await self.rest.updated(message)
        return message

    async def delete_channel(self, channel: Channel) -> None:
        """A moderator deletes a channel or thread (CHANNEL_DELETE / THREAD_DELETE); later requests get 10003."""
        self.world.channels.pop(channel.id, None)
        guild = self.world.guilds.get(channel.guild_id or 0)
        if guild is not None:
            guild.channels.pop(channel.id, None)
            guild.threads.pop(channel.id, None)
        if channel.is_thread:
            data = {"id": str(channel.id), "guild_id": str(channel.guild_id), "parent_id": str(channel.parent_id)}
            await self.gateway.dispatch("THREAD_DELETE", data | {"type": channel.type})
        else:
            await self.gateway.dispatch("CHANNEL_DELETE", channel.payload())

    async def delete_message(self, channel_id: int, message_id: int) -> None:
        """A message disappears (MESSAGE_DELETE)."""
        message = self.world.find_message(channel_id, message_id)
        if message is None:
            raise LookupError(f"no message {message_id} in channel {channel_id}")
        await self.rest.deleted(self._channel(channel_id), message)

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send a raw dispatch to every session it is routed to (e.g. the same MESSAGE_CREATE twice)."""
        await self.gateway.dispatch(event, data)

    async def disconnect_all(self, code: int = 4000) -> None:
        """Drop every websocket with a resumable close code; discord.py reconnects and RESUMEs."""
        await self.gateway.disconnect_all(code)

    async def slash(
        self,
        guild: Guild | None,
        channel_id: int,
        member: Member | User,
        name: str,
        *,
        subcommand: str | None = None,
        options: Mapping[str, object] | None = None,
        timeout: float = 10,  # noqa: ASYNC109 - the sandbox's API
        settle: float = 0.1,
    ) -> InteractionResult:
        """Run a synced slash command as ``member``, wait for the answer (``subcommand``: "sub", "group sub").

        After a deferral it waits (within ``timeout``) for the first edit or followup, then until no request
        for the interaction has come for ``settle`` seconds; later followups still land on the result.
        Raises LookupError if the bot did not sync the command (or an option), PermissionError if the
        command's ``default_member_permissions`` hide it from the member, TimeoutError if nobody answers.
        """
        channel = self._channel(channel_id)
        command = self._command(guild, name, member, channel=channel)
        data = self.interactions.command_data(command, guild, subcommand, options or {})
        pending = self.interactions.open(TYPE_APPLICATION_COMMAND, data, guild, channel, member)
        return await self._run(pending, timeout, settle)

    async def autocomplete(
        self,
        guild: Guild | None,
        channel_id: int,
        member: Member | User,
        name: str,
        *,
        focused: str,
        subcommand: str | None = None,
        options: Mapping[str, object] | None = None,
        timeout: float = 10,  # noqa: ASYNC109 - the sandbox's API
    ) -> InteractionResult:
        """Ask for autocomplete choices of option ``focused`` (its partial value is in ``options``)."""
        channel = self._channel(channel_id)
        command = self._command(guild, name, member, channel=channel)
        data = self.interactions.command_data(command, guild, subcommand, options or {}, focused=focused)
        pending = self.interactions.open(TYPE_AUTOCOMPLETE, data, guild, channel, member)
        return await self._run(pending, timeout, 0)

    async def click(
        self,
        guild: Guild | None,
        channel_id: int,
        member: Member | User,
        message_id: int,
        custom_id: str,
        *,
        values: list[str] | None = None,
        timeout: float = 10,  # noqa: ASYNC109 - the sandbox's API
        settle: float = 0.1,
    ) -> InteractionResult:
        """Click a button (or pick select ``values``) on a message; LookupError if there is no such one."""
        target = self.world.find_message(channel_id, message_id)
        if target is None:
            raise LookupError(f"no message {message_id} in channel {channel_id}")
        component = next((c for c in _walk(target["components"]) if c.get("custom_id") == custom_id), None)
        if component is None:
            raise LookupError(f"message {message_id} has no component {custom_id!r}")
        data: JSON = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in _SELECT_TYPES:
            data["values"] = list(values or [])
        channel = self._channel(channel_id)
        pending = self.interactions.open(TYPE_MESSAGE_COMPONENT, data, guild, channel, member, message=target)
        return await self._run(pending, timeout, settle)

    async def submit_modal(
        self,
        guild: Guild | None,
        channel_id: int,
        member: Member | User,
        custom_id: str,
        values: Mapping[str, str | list[str]],
        *,
        timeout: float = 10,  # noqa: ASYNC109 - the sandbox's API
        settle: float = 0.1,
    ) -> InteractionResult:
        """Submit the modal the bot last opened with ``custom_id``, its inputs filled from ``values``."""
        opener = next(
            (
                p
                for p in reversed(self.interactions.by_id.values())
                if p.result.type == CALLBACK_MODAL and p.result.data.get("custom_id") == custom_id
            ),
            None,
        )
        if opener is None:
            raise LookupError(f"the bot has not opened a modal {custom_id!r}")
        components = self.interactions.modal_components(opener.result.data, values)
        data = {"custom_id": custom_id, "components": components}
        channel, source = self._channel(channel_id), opener.source_message
        pending = self.interactions.open(TYPE_MODAL_SUBMIT, data, guild, channel, member, message=source)
        pending.trigger = opener
        return await self._run(pending, timeout, settle)

    def _command(
        self, guild: Guild | None, name: str, member: Member | User, *, channel: Channel | None = None
    ) -> JSON:
        scopes = ([guild.id] if guild is not None else []) + [None]
        synced = [c for scope in scopes for c in self.world.commands.get(scope, [])]
        command = next((c for c in synced if c["name"] == name and c["type"] == 1), None)
        if command is None:
            raise LookupError(f"/{name} is not synced (the bot must sync its command tree first)")
        _check_context(command, in_dm=guild is None)
        required = command.get("default_member_permissions")
        if required is not None and guild is not None and isinstance(member, Member):
            # the client weighs them against the member's permissions where the command is used, overwrites included
            have = guild.channel_permissions_of(member, channel) if channel else guild.permissions_of(member)
            if (have & int(required)) != int(required) or (int(required) == 0 and have != ALL_PERMISSIONS):
                raise PermissionError(f"/{name} needs permissions {required} that {member.name} lacks")
        return command

    async def _run(
        self,
        pending: PendingInteraction,
        timeout: float,  # noqa: ASYNC109 - passed on to Interactions.wait
        settle: float,
    ) -> InteractionResult:
        await self.gateway.dispatch("INTERACTION_CREATE", pending.payload)
        return await self.interactions.wait(pending, timeout=timeout, settle=settle)

    # ----------------------------------------------------------------- inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every REST request the bot made, in order (unknown routes included, with status 404)."""
        return self.rest.requests

    @property
    def sessions(self) -> list[GatewaySession]:
        """Gateway sessions with a websocket attached (``identify``, ``intents``, ``shard``, ``resumes``)."""
        return self.gateway.sessions

    @property
    def threads(self) -> dict[int, Channel]:
        """Threads the bot created, by id."""
        bot_id = self.bot_user.id
        return {c.id: c for c in self.world.channels.values() if c.is_thread and c.owner_id == bot_id}

    @property
    def commands(self) -> list[JSON]:
        """Application commands the bot synced (global, then per guild; guild ones carry ``guild_id``)."""
        return [command for commands in self.world.commands.values() for command in commands]

    def messages(self, channel_id: int) -> list[JSON]:
        """The channel's (or thread's) history, oldest first, including the bot's messages."""
        return list(self._channel(channel_id).messages)

    def bot_messages(self, channel_id: int | None = None) -> list[JSON]:
        """Messages the bot posted, in one channel or everywhere (ephemeral ones: see InteractionResult)."""
        channels = [self._channel(channel_id)] if channel_id is not None else self.world.channels.values()
        bot_id = str(self.bot_user.id)
        return [m for channel in channels for m in channel.messages if m["author"]["id"] == bot_id]

    async def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = 10,  # noqa: ASYNC109 - the sandbox's API
        *,
        include_past: bool = True,
    ) -> RecordedRequest:
        """The first request matching ``predicate``, already made or within ``timeout`` seconds."""
        return await self.rest.wait_for(predicate, timeout, include_past=include_past)


def _bits(permissions: discord.Permissions | int) -> int:
    return permissions.value if isinstance(permissions, discord.Permissions) else int(permissions)


def _check_context(command: JSON, *, in_dm: bool) -> None:
    """Refuse a command where Discord would not offer it: where its ``contexts`` (or the older ``dm_permission``)
    leave it out; ``contexts`` null means everywhere. (Guild commands are never listed in DMs at all.)"""
    name = command["name"]
    contexts = command.get("contexts")
    wanted = 1 if in_dm else 0  # BOT_DM, GUILD
    if contexts is not None and wanted not in contexts:
        raise PermissionError(f"/{name} is not available {'in DMs' if in_dm else 'in servers'} (contexts {contexts})")
    if in_dm and contexts is None and command.get("dm_permission") is False:
        raise PermissionError(f"/{name} is not available in DMs (dm_permission false)")


def _walk(components: list[Any]) -> Iterator[JSON]:
    """Every component in a message's (possibly nested) component tree."""
    for component in components:
        yield component
        yield from _walk(component.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(component.get(key), dict):
                yield from _walk([component[key]])
