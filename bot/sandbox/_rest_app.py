"""The sandbox REST API's routes about things other than sending messages: users, guilds, the application, the
gateway, application commands, reactions and threads (a mixin of :class:`bot.sandbox._rest.RestApi`)."""

from __future__ import annotations

import re

from aiohttp import web

from ._gateway import Gateway
from ._http import BODY, ApiError, json_response
from ._world import CHANNEL_PRIVATE_THREAD, CHANNEL_PUBLIC_THREAD, FLAG_HAS_THREAD, JSON, Channel, World

#: What Discord fills in for fields a command upload leaves out (or sends as null).
_COMMAND_DEFAULTS: JSON = {
    "type": 1,
    "description": "",
    "options": [],
    "nsfw": False,
    "contexts": None,
    "integration_types": [0],
    "dm_permission": True,
}
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


class AppRoutes:
    """Users, guilds and members, the application, the gateway, commands, reactions and threads."""

    world: World
    gateway: Gateway
    #: What ``GET /gateway/bot`` recommends as the shard count.
    recommended_shards: int

    # ----------------------------------------------------------------- lookups

    def _channel(self, request: web.Request) -> Channel:
        channel = self.world.channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _message(self, channel: Channel, request: web.Request) -> JSON:
        message = self.world.find_message(channel.id, int(request.match_info["message_id"]))
        if message is None:
            raise ApiError(404, 10008, "Unknown Message")
        return message

    # ----------------------------------------------------------------- reactions

    async def add_reaction(self, request: web.Request) -> web.Response:
        """PUT .../reactions/{emoji}/@me: the bot reacts."""
        return await self._react(request, add=True)

    async def remove_reaction(self, request: web.Request) -> web.Response:
        """DELETE .../reactions/{emoji}/@me: the bot takes its reaction back."""
        return await self._react(request, add=False)

    async def _react(self, request: web.Request, *, add: bool) -> web.Response:
        channel = self._channel(request)
        message = self._message(channel, request)
        name, _, emoji_id = request.match_info["emoji"].partition(":")
        emoji = {"id": emoji_id or None, "name": name}
        reactions: list[JSON] = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["emoji"] == emoji), None)
        if add == bool(reaction and reaction["me"]):
            return web.Response(status=204)
        if reaction is None:
            reaction = {"emoji": emoji, "count": 0, "me": False, "me_burst": False, "burst_colors": []}
            reactions.append(reaction)
        reaction["count"] += 1 if add else -1
        reaction["me"] = add
        reaction["count_details"] = {"burst": 0, "normal": reaction["count"]}
        if reaction["count"] == 0:
            reactions.remove(reaction)
        event: JSON = {
            "user_id": str(self.world.bot_user.id),
            "channel_id": str(channel.id),
            "message_id": message["id"],
            "emoji": emoji,
            "burst": False,
            "type": 0,
        }
        if channel.guild_id is not None:
            event["guild_id"] = str(channel.guild_id)
        await self.gateway.dispatch("MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE", event)
        return web.Response(status=204)

    # ----------------------------------------------------------------- threads

    async def thread_from_message(self, request: web.Request) -> web.Response:
        """POST /channels/{channel_id}/messages/{message_id}/threads: the thread's id is the message's."""
        channel = self._channel(request)
        message = self._message(channel, request)
        if channel.is_thread or channel.guild_id is None:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        if int(message["id"]) in self.world.channels:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        thread = self._new_thread(channel, request, thread_id=int(message["id"]))
        message["thread"] = thread.payload()
        message["flags"] |= FLAG_HAS_THREAD
        await self.gateway.dispatch("THREAD_CREATE", thread.payload() | {"newly_created": True})
        return json_response(thread.payload(), 201)

    async def thread_without_message(self, request: web.Request) -> web.Response:
        """POST /channels/{channel_id}/threads (type 11 public or 12 private)."""
        channel = self._channel(request)
        if channel.is_thread or channel.guild_id is None:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        thread_type = int((request[BODY] or {}).get("type") or CHANNEL_PRIVATE_THREAD)
        if thread_type not in (CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD):
            raise ApiError(400, 50035, "Invalid Form Body: type")
        thread = self._new_thread(channel, request, thread_type=thread_type)
        await self.gateway.dispatch("THREAD_CREATE", thread.payload() | {"newly_created": True})
        return json_response(thread.payload(), 201)

    def _new_thread(self, channel: Channel, request: web.Request, **kwargs: int) -> Channel:
        name = str((request[BODY] or {}).get("name") or "")
        if not 1 <= len(name) <= 100:
            raise ApiError(400, 50035, "Invalid Form Body: name must be 1-100 characters")
        return self.world.create_thread(channel, name, self.world.bot_user.id, **kwargs)

    # ----------------------------------------------------------------- commands

    def _command_scope(self, request: web.Request) -> int | None:
        if int(request.match_info["app_id"]) != self.world.application_id:
            raise ApiError(404, 10002, "Unknown Application")
        if "guild_id" not in request.match_info:
            return None
        guild_id = int(request.match_info["guild_id"])
        if guild_id not in self.world.guilds:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild_id

    async def get_commands(self, request: web.Request) -> web.Response:
        """GET /applications/{app_id}[/guilds/{guild_id}]/commands."""
        return json_response(self.world.commands.get(self._command_scope(request), []))

    async def put_commands(self, request: web.Request) -> web.Response:
        """PUT /applications/{app_id}[/guilds/{guild_id}]/commands: bulk overwrite, ids kept by name."""
        guild_id = self._command_scope(request)
        specs = request[BODY] or []
        for spec in specs:
            _validate_command(spec)
        old = {(c["name"], c.get("type", 1)): c["id"] for c in self.world.commands.get(guild_id, [])}
        stored = []
        for spec in specs:
            command_id = old.get((spec["name"], spec.get("type", 1))) or str(self.world.snowflakes.next())
            given = {key: value for key, value in spec.items() if value is not None}
            command = _COMMAND_DEFAULTS | given
            permissions = spec.get("default_member_permissions")
            command["default_member_permissions"] = None if permissions is None else str(int(permissions))
            command |= {"id": command_id, "application_id": str(self.world.application_id)}
            command["version"] = str(self.world.snowflakes.next())
            if guild_id is not None:
                command["guild_id"] = str(guild_id)
            stored.append(command)
        self.world.commands[guild_id] = stored
        return json_response(stored)

    # ----------------------------------------------------------------- users, guilds, channels, app

    async def get_me(self, request: web.Request) -> web.Response:
        """GET /users/@me: the bot user."""
        me = {"verified": True, "mfa_enabled": False, "locale": "en-US", "premium_type": 0}
        return json_response(self.world.bot_user.payload() | me)

    async def get_user(self, request: web.Request) -> web.Response:
        """GET /users/{user_id}."""
        user = self.world.users.get(int(request.match_info["user_id"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(user.payload())

    async def open_dm(self, request: web.Request) -> web.Response:
        """POST /users/@me/channels: the DM channel with ``recipient_id``."""
        user = self.world.users.get(int((request[BODY] or {}).get("recipient_id") or 0))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return json_response(self.world.open_dm(user).payload())

    async def get_application(self, request: web.Request) -> web.Response:
        """GET /oauth2/applications/@me and /applications/@me."""
        bot = self.world.bot_user
        return json_response(
            {
                "id": str(self.world.application_id),
                "name": bot.name,
                "icon": None,
                "description": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": self.world.application_flags,
                "flags_new": str(self.world.application_flags),
                "role_connections_verification_url": None,
                "explicit_content_filter": 0,
                "eligible_oauth2_scopes": ["applications.commands", "bot"],
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "owner": self.world.owner.payload(),
                "team": None,
                "bot": bot.payload(),
                "rpc_origins": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "tags": [],
                "approximate_guild_count": len(self.world.guilds),
            }
        )

    async def get_gateway(self, request: web.Request) -> web.Response:
        """GET /gateway."""
        return json_response({"url": self.gateway.url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        """GET /gateway/bot: URL, recommended shards and the (never exhausted) session start limit."""
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        data = {"url": self.gateway.url, "shards": self.recommended_shards, "session_start_limit": limit}
        return json_response(data)

    async def get_guild(self, request: web.Request) -> web.Response:
        """GET /guilds/{guild_id} (``?with_counts=true`` adds approximate counts)."""
        guild = self.world.guilds.get(int(request.match_info["guild_id"]))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        data = guild.summary()
        if request.query.get("with_counts", "").lower() in ("true", "1"):
            data |= {"approximate_member_count": len(guild.members), "approximate_presence_count": 0}
        return json_response(data)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        """GET /guilds/{guild_id}/channels (threads are not listed, as on Discord)."""
        guild = self.world.guilds.get(int(request.match_info["guild_id"]))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return json_response([channel.payload() for channel in guild.channels.values()])

    async def get_member(self, request: web.Request) -> web.Response:
        """GET /guilds/{guild_id}/members/{user_id}."""
        guild = self.world.guilds.get(int(request.match_info["guild_id"]))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        member = guild.members.get(int(request.match_info["user_id"]))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return json_response(member.payload())


def _validate_command(spec: JSON, *, depth: int = 0) -> None:
    """Discord's checks on a command (or option): name pattern, description length, at most 25 options."""
    is_chat_input = depth > 0 or spec.get("type", 1) == 1  # context menu names may have spaces and capitals
    name = str(spec.get("name", ""))
    if is_chat_input and (not _COMMAND_NAME.match(name) or name != name.lower()):
        raise ApiError(400, 50035, f"Invalid Form Body: name {name!r} must match ^[-_a-z0-9]{{1,32}}$")
    if is_chat_input and not 1 <= len(spec.get("description") or "") <= 100:
        raise ApiError(400, 50035, f"Invalid Form Body: {name!r} needs a description of 1-100 characters")
    options = spec.get("options") or []
    if len(options) > 25 or len(spec.get("choices") or []) > 25:
        raise ApiError(400, 50035, f"Invalid Form Body: {name!r} has more than 25 options or choices")
    for option in options:
        _validate_command(option, depth=depth + 1)
