"""Channel permission overwrites and how Discord applies them (its documented order: the guild-level permissions,
then the channel's overwrite for @everyone, those of the member's roles together, and the member's own)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import discord

ALL_PERMISSIONS = discord.Permissions.all().value
ADMINISTRATOR = discord.Permissions(administrator=True).value
#: ``app_permissions`` of an interaction in a DM with the bot (Discord's documented set for the app's own DMs).
DM_APP_PERMISSIONS = discord.Permissions(
    attach_files=True, embed_links=True, mention_everyone=True, use_external_emojis=True
).value

#: Permission overwrite targets.
OVERWRITE_ROLE = 0
OVERWRITE_MEMBER = 1


@dataclass(eq=False)
class Overwrite:
    """A channel's permission overwrite for a role (``OVERWRITE_ROLE``; the @everyone role's id is the guild's) or a
    member (``OVERWRITE_MEMBER``)."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        """The overwrite object as the API sends it."""
        return {"id": str(self.id), "type": self.type, "allow": str(self.allow), "deny": str(self.deny)}


def apply_overwrites(
    base: int, overwrites: Mapping[int, Overwrite], *, guild_id: int, role_ids: Iterable[int], member_id: int
) -> int:
    """The permissions in a channel from the guild-level ``base``: administrators (``base`` with Administrator)
    keep everything; otherwise the @everyone overwrite, then every role overwrite of the member at once (denies,
    then allows), then the member's own overwrite."""
    if base & ADMINISTRATOR:
        return ALL_PERMISSIONS
    value = base
    everyone = overwrites.get(guild_id)
    if everyone is not None and everyone.type == OVERWRITE_ROLE:
        value = (value & ~everyone.deny) | everyone.allow
    allow = deny = 0
    for role_id in role_ids:
        role = overwrites.get(role_id)
        if role is not None and role.type == OVERWRITE_ROLE:
            allow, deny = allow | role.allow, deny | role.deny
    value = (value & ~deny) | allow
    own = overwrites.get(member_id)
    if own is not None and own.type == OVERWRITE_MEMBER:
        value = (value & ~own.deny) | own.allow
    return value
