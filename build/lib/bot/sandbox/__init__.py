"""A Discord-compatible gateway + REST server on 127.0.0.1 that the real discord.py client connects to."""

from ._gateway import GatewaySession
from ._http import RecordedRequest
from ._interactions import InteractionResult
from ._world import Channel, Guild, Member, Role, User
from .server import LoopbackDiscord

__all__ = [
    "Channel",
    "GatewaySession",
    "Guild",
    "InteractionResult",
    "LoopbackDiscord",
    "Member",
    "RecordedRequest",
    "Role",
    "User",
]
