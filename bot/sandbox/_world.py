"""The sandbox's world: snowflakes, users, guilds, channels, members, messages and their Discord payloads."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord

from ._permissions import ADMINISTRATOR, ALL_PERMISSIONS, Overwrite, apply_overwrites

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1420070400000

CHANNEL_TEXT = 0
CHANNEL_DM = 1
CHANNEL_PUBLIC_THREAD = 11
CHANNEL_PRIVATE_THREAD = 12
THREAD_TYPES = (CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD)

MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19
MESSAGE_CHAT_INPUT_COMMAND = 20

FLAG_HAS_THREAD = 1 << 5
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

#: What @everyone may do in a fresh sandbox guild (roughly Discord's default for new servers).
EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    embed_links=True,
    attach_files=True,
    add_reactions=True,
    read_message_history=True,
    use_application_commands=True,
    change_nickname=True,
    create_instant_invite=True,
).value
#: The bot's managed role: the text permissions a typical bot invite asks for.
BOT_PERMISSIONS = (discord.Permissions.text() | discord.Permissions(view_channel=True)).value

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


class Snowflakes:
    """Hands out increasing ids in Discord's layout, ``((ms - epoch) << 22) | counter``."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        """Return a fresh snowflake, later than every one handed out before."""
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(now, self._last + 1)
        return self._last


def iso_now() -> str:
    """The current UTC time in Discord's ISO-8601 form."""
    return datetime.now(UTC).isoformat()


def snowflake_iso(snowflake: int) -> str:
    """The creation time encoded in a snowflake, as ISO-8601."""
    ms = (snowflake >> 22) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass(eq=False)
class User:
    """A Discord user (the bot itself, or a simulated person)."""

    id: int
    name: str
    bot: bool = False

    def payload(self) -> JSON:
        """The user object as the API sends it."""
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": None if self.bot else self.name,
            "avatar": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }


@dataclass(eq=False)
class Role:
    """A guild role; the @everyone role has the guild's id."""

    id: int
    guild_id: int
    name: str
    permissions: int
    position: int = 0
    bot_id: int | None = None

    def payload(self) -> JSON:
        """The role object as the API sends it."""
        data: JSON = {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.bot_id is not None,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass(eq=False)
class Member:
    """A user's membership in one guild."""

    user: User
    guild_id: int
    role_ids: list[int] = field(default_factory=list)
    joined_at: str = field(default_factory=iso_now)

    @property
    def id(self) -> int:
        """The member's user id."""
        return self.user.id

    @property
    def name(self) -> str:
        """The member's user name."""
        return self.user.name

    def payload(self, *, with_user: bool = True, permissions: int | None = None) -> JSON:
        """The guild member object; interactions also carry the member's ``permissions``."""
        data: JSON = {
            "roles": [str(role_id) for role_id in self.role_ids],
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass(eq=False)
class Channel:
    """A text channel, thread or DM channel, with its message history (oldest first)."""

    id: int
    name: str
    type: int = CHANNEL_TEXT
    guild_id: int | None = None
    parent_id: int | None = None
    owner_id: int | None = None
    position: int = 0
    recipient: User | None = None
    messages: list[JSON] = field(default_factory=list)
    #: Permission overwrites by role or user id (threads use their parent channel's).
    overwrites: dict[int, Overwrite] = field(default_factory=dict)

    @property
    def is_thread(self) -> bool:
        """Whether this channel is a thread."""
        return self.type in THREAD_TYPES

    def payload(self) -> JSON:
        """The channel object as the API sends it."""
        last = str(self.messages[-1]["id"]) if self.messages else None
        if self.type == CHANNEL_DM:
            recipients = [self.recipient.payload()] if self.recipient else []
            return {
                "id": str(self.id),
                "type": CHANNEL_DM,
                "last_message_id": last,
                "flags": 0,
                "recipients": recipients,
            }
        data: JSON = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "last_message_id": last,
            "rate_limit_per_user": 0,
            "flags": 0,
            "parent_id": str(self.parent_id) if self.parent_id else None,
        }
        if self.is_thread:
            data |= {
                "owner_id": str(self.owner_id),
                "message_count": len(self.messages),
                "total_message_sent": len(self.messages),
                "member_count": 1,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": snowflake_iso(self.id),
                    "locked": False,
                    "create_timestamp": snowflake_iso(self.id),
                },
            }
        else:
            data |= {
                "position": self.position,
                "permission_overwrites": [overwrite.payload() for overwrite in self.overwrites.values()],
                "topic": None,
                "nsfw": False,
                "default_auto_archive_duration": 1440,
            }
        return data


@dataclass(eq=False)
class Guild:
    """A guild with its roles, channels, threads and members."""

    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    threads: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)

    def permissions_of(self, member: Member) -> int:
        """The member's guild-level permissions (owner and administrators get everything)."""
        if member.id == self.owner_id:
            return ALL_PERMISSIONS
        value = self.roles[self.id].permissions
        for role_id in member.role_ids:
            value |= self.roles[role_id].permissions
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def channel_permissions_of(self, member: Member, channel: Channel) -> int:
        """The member's permissions in ``channel`` (a thread: its parent's), overwrites applied as Discord does."""
        source = self.channels.get(channel.parent_id or 0, channel) if channel.is_thread else channel
        base, roles = self.permissions_of(member), member.role_ids
        return apply_overwrites(base, source.overwrites, guild_id=self.id, role_ids=roles, member_id=member.id)

    def summary(self) -> JSON:
        """The guild object without the gateway-only fields (``GET /guilds/{id}``)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "features": [],
            "roles": [role.payload() for role in self.roles.values()],
            "emojis": [],
            "stickers": [],
        }

    def payload(self) -> JSON:
        """The full ``GUILD_CREATE`` object, with every member."""
        return self.summary() | {
            "joined_at": snowflake_iso(self.id),
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "members": [member.payload() for member in self.members.values()],
            "channels": [channel.payload() for channel in self.channels.values()],
            "threads": [thread.payload() for thread in self.threads.values()],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "incidents_data": None,
        }


class World:
    """Everything the sandbox knows: the bot, guilds, channels, members, messages and synced commands."""

    def __init__(self, *, message_content_intent_allowed: bool = True) -> None:
        #: The developer-portal toggle for the privileged message-content intent.
        self.message_content_intent_allowed = message_content_intent_allowed
        self.snowflakes = Snowflakes()
        self.bot_user = User(self.snowflakes.next(), "Stancebot", bot=True)
        self.owner = User(self.snowflakes.next(), "sandbox-owner")
        self.users: dict[int, User] = {self.bot_user.id: self.bot_user, self.owner.id: self.owner}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        #: Ephemeral messages by id: only the interacting user sees them, so they are in no channel history.
        self.ephemeral: dict[int, JSON] = {}
        #: Synced application commands, by guild id (``None`` for global commands).
        self.commands: dict[int | None, list[JSON]] = {}

    @property
    def application_id(self) -> int:
        """The application's id (the bot user's id, as for every modern Discord app)."""
        return self.bot_user.id

    @property
    def application_flags(self) -> int:
        """Application flags: GATEWAY_MESSAGE_CONTENT_LIMITED (1 << 19) when the intent is switched on."""
        return 1 << 19 if self.message_content_intent_allowed else 0

    def create_guild(self, name: str) -> Guild:
        """A guild with @everyone, the bot's managed role, an owner and the bot as members."""
        guild = Guild(self.snowflakes.next(), name, owner_id=self.owner.id)
        guild.roles[guild.id] = Role(guild.id, guild.id, "@everyone", EVERYONE_PERMISSIONS)
        bot = self.bot_user
        bot_role = Role(self.snowflakes.next(), guild.id, bot.name, BOT_PERMISSIONS, 1, bot.id)
        guild.roles[bot_role.id] = bot_role
        guild.members[self.owner.id] = Member(self.owner, guild.id)
        guild.members[bot.id] = Member(bot, guild.id, [bot_role.id])
        self.guilds[guild.id] = guild
        return guild

    def create_channel(self, guild: Guild, name: str) -> Channel:
        """A text channel in the guild."""
        channel = Channel(self.snowflakes.next(), name, guild_id=guild.id, position=len(guild.channels))
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    def create_thread(
        self,
        parent: Channel,
        name: str,
        owner_id: int,
        *,
        thread_id: int | None = None,
        thread_type: int = CHANNEL_PUBLIC_THREAD,
    ) -> Channel:
        """A thread under ``parent`` (started from a message when ``thread_id`` is that message's id)."""
        if parent.guild_id is None:
            raise ValueError("threads live in guild channels")
        thread = Channel(
            thread_id or self.snowflakes.next(),
            name,
            type=thread_type,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=owner_id,
        )
        self.guilds[parent.guild_id].threads[thread.id] = thread
        self.channels[thread.id] = thread
        return thread

    def create_member(self, guild: Guild, name: str, *, permissions: int = 0, bot: bool = False) -> Member:
        """A new user in the guild; ``permissions`` come through a role of their own."""
        user = User(self.snowflakes.next(), name, bot=bot)
        self.users[user.id] = user
        member = Member(user, guild.id)
        if permissions:
            role = Role(self.snowflakes.next(), guild.id, f"{name}-role", permissions, len(guild.roles))
            guild.roles[role.id] = role
            member.role_ids.append(role.id)
        guild.members[user.id] = member
        return member

    def create_role(self, guild: Guild, name: str, permissions: int = 0) -> Role:
        """A new role of the guild (above the existing ones)."""
        role = Role(self.snowflakes.next(), guild.id, name, permissions, len(guild.roles))
        guild.roles[role.id] = role
        return role

    def open_dm(self, user: User) -> Channel:
        """The DM channel between the bot and ``user`` (created once)."""
        for channel in self.channels.values():
            if channel.type == CHANNEL_DM and channel.recipient is user:
                return channel
        channel = Channel(self.snowflakes.next(), "", type=CHANNEL_DM, recipient=user)
        self.channels[channel.id] = channel
        return channel

    def find_message(self, channel_id: int, message_id: int) -> JSON | None:
        """A stored message of the channel (or an ephemeral one), or ``None``."""
        channel = self.channels.get(channel_id)
        for message in channel.messages if channel else ():
            if int(message["id"]) == message_id:
                return message
        ephemeral = self.ephemeral.get(message_id)
        return ephemeral if ephemeral and int(ephemeral["channel_id"]) == channel_id else None

    def build_message(
        self,
        channel: Channel,
        author: User,
        content: str = "",
        *,
        message_id: int | None = None,
        message_type: int = MESSAGE_DEFAULT,
        flags: int = 0,
        embeds: list[JSON] | None = None,
        components: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
        extra: JSON | None = None,
    ) -> JSON:
        """A full message object; mentions come from ``<@id>`` / ``<@&id>`` markup in the content."""
        message_id = message_id or self.snowflakes.next()
        mentioned = [self.users[int(uid)] for uid in _USER_MENTION.findall(content) if int(uid) in self.users]
        data: JSON = {
            "id": str(message_id),
            "type": message_type,
            "channel_id": str(channel.id),
            "author": author.payload(),
            "content": content,
            "timestamp": snowflake_iso(message_id),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": "@everyone" in content or "@here" in content,
            "mentions": [user.payload() for user in dict.fromkeys(mentioned)],
            "mention_roles": _ROLE_MENTION.findall(content),
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": components or [],
            "pinned": False,
            "flags": flags,
        }
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
            member = self.guilds[channel.guild_id].members.get(author.id)
            if member is not None:
                data["member"] = member.payload(with_user=False)
        return data | (extra or {})

    def store_message(self, channel: Channel, message: JSON) -> None:
        """Put the message into the channel's history (replacing one with the same id)."""
        if message["flags"] & FLAG_EPHEMERAL:
            self.ephemeral[int(message["id"])] = message
            return
        for index, old in enumerate(channel.messages):
            if old["id"] == message["id"]:
                channel.messages[index] = message
                return
        channel.messages.append(message)

    def remove_message(self, channel: Channel, message_id: int) -> JSON | None:
        """Take a message out of the channel's history (or the ephemeral store) and return it."""
        for index, message in enumerate(channel.messages):
            if int(message["id"]) == message_id:
                return channel.messages.pop(index)
        return self.ephemeral.pop(message_id, None)
