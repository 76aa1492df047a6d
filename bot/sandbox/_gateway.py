"""The sandbox gateway: websocket sessions, IDENTIFY / RESUME, heartbeats, intents, shards and dispatch."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from ._shapes import content_visible, without_content
from ._world import JSON, World

_log = logging.getLogger(__name__)

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11
#: Presence and voice state updates: accepted and ignored.
IGNORED_OPS = (3, 4)

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_DIRECT_MESSAGE_REACTIONS = 1 << 13
INTENT_MESSAGE_CONTENT = 1 << 15

HEARTBEAT_INTERVAL_MS = 41250
#: Seconds a server-side close waits for the client's close frame (a stalled client must not stall stop()).
CLOSE_TIMEOUT = 2.0
#: Events kept per session for RESUME.
BACKLOG = 5000

_GUILD_EVENT_INTENTS = {
    "GUILD_CREATE": INTENT_GUILDS,
    "CHANNEL_CREATE": INTENT_GUILDS,
    "THREAD_CREATE": INTENT_GUILDS,
    "CHANNEL_DELETE": INTENT_GUILDS,
    "THREAD_DELETE": INTENT_GUILDS,
    "GUILD_ROLE_CREATE": INTENT_GUILDS,
    "GUILD_MEMBER_ADD": INTENT_GUILD_MEMBERS,
    "GUILD_MEMBER_UPDATE": INTENT_GUILD_MEMBERS,
    "GUILD_MEMBER_REMOVE": INTENT_GUILD_MEMBERS,
    "GUILD_ROLE_UPDATE": INTENT_GUILDS,
    "CHANNEL_UPDATE": INTENT_GUILDS,
    "MESSAGE_CREATE": INTENT_GUILD_MESSAGES,
    "MESSAGE_UPDATE": INTENT_GUILD_MESSAGES,
    "MESSAGE_DELETE": INTENT_GUILD_MESSAGES,
    "MESSAGE_REACTION_ADD": INTENT_GUILD_MESSAGE_REACTIONS,
    "MESSAGE_REACTION_REMOVE": INTENT_GUILD_MESSAGE_REACTIONS,
}
_DM_EVENT_INTENTS = {
    "MESSAGE_CREATE": INTENT_DIRECT_MESSAGES,
    "MESSAGE_UPDATE": INTENT_DIRECT_MESSAGES,
    "MESSAGE_DELETE": INTENT_DIRECT_MESSAGES,
    "MESSAGE_REACTION_ADD": INTENT_DIRECT_MESSAGE_REACTIONS,
    "MESSAGE_REACTION_REMOVE": INTENT_DIRECT_MESSAGE_REACTIONS,
}


@dataclass(eq=False)
class GatewaySession:
    """One identified gateway session; it outlives its websocket until it is resumed or invalidated."""

    session_id: str
    identify: JSON
    ws: web.WebSocketResponse | None = None
    seq: int = 0
    resumes: int = 0
    backlog: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=BACKLOG))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: A zombie connection: the socket stays open but nothing is sent (events wait in the backlog).
    silent: bool = False

    @property
    def intents(self) -> int:
        """The intents the client identified with."""
        return int(self.identify.get("intents", 0))

    @property
    def shard(self) -> tuple[int, int] | None:
        """``(shard_id, num_shards)`` when the client identified as a shard."""
        shard = self.identify.get("shard")
        return (int(shard[0]), int(shard[1])) if shard else None

    @property
    def connected(self) -> bool:
        """Whether a websocket is attached right now."""
        return self.ws is not None and not self.ws.closed

    def routes(self, guild_id: int | None) -> bool:
        """Whether events of this guild (``None``: DMs, which go to shard 0) reach this session."""
        if self.shard is None:
            return True
        shard_id, num_shards = self.shard
        return shard_id == (0 if guild_id is None else (guild_id >> 22) % num_shards)

    async def emit(self, event: str, data: Any) -> None:
        """Send a dispatch with the next sequence number (hold ``lock``); kept in the backlog for RESUME."""
        self.seq += 1
        frame = json.dumps({"op": OP_DISPATCH, "t": event, "s": self.seq, "d": data})
        self.backlog.append((self.seq, frame))
        if self.ws is not None and not self.ws.closed and not self.silent:
            try:
                await self.ws.send_str(frame)
            except ConnectionError:  # the client vanished; the frame waits in the backlog for a RESUME
                _log.debug("session %s: dispatch %s not delivered", self.session_id, event)


class Gateway:
    """Serves ``/gateway`` websockets and routes dispatches to the sessions that should see them."""

    def __init__(self, world: World) -> None:
        self.world = world
        #: The URL READY hands out as ``resume_gateway_url``; set once the server is bound.
        self.url = ""
        self._sessions: dict[str, GatewaySession] = {}
        self._outbox: deque[tuple[str, JSON]] = deque()
        self._flush_lock = asyncio.Lock()
        self._flush_tasks: set[asyncio.Task[None]] = set()
        #: The heartbeat interval HELLO asks for.
        self.heartbeat_interval_ms = HEARTBEAT_INTERVAL_MS
        #: How many already-delivered events a RESUME replays besides the missed ones (at-least-once delivery).
        self.resume_overlap = 0
        #: Each open websocket's transport, to drop it without a close frame.
        self.transports: dict[web.WebSocketResponse, asyncio.BaseTransport | None] = {}

    @property
    def sessions(self) -> list[GatewaySession]:
        """Sessions with a websocket attached right now."""
        return [session for session in self._sessions.values() if session.connected]

    async def dispatch(self, event: str, data: JSON) -> None:
        """Queue a dispatch and return once it (and every event queued before it) has gone out."""
        self._outbox.append((event, data))
        await self._flush()

    def dispatch_soon(self, event: str, data: JSON) -> None:
        """Queue a dispatch from synchronous code; it keeps its place in the order of events."""
        if not self._sessions:
            return
        self._outbox.append((event, data))
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flush_tasks.add(task)
        task.add_done_callback(self._flush_tasks.discard)

    async def disconnect_all(self, code: int = 4000) -> None:
        """Close every websocket with ``code``; the sessions stay resumable."""
        for session in self.sessions:
            ws, session.ws = session.ws, None
            if ws is not None:
                await ws.close(code=code, message=b"Sandbox forced a disconnect.")

    def forget(self, session: GatewaySession) -> None:
        """Invalidate a session: it can no longer be resumed and gets no more events."""
        self._sessions.pop(session.session_id, None)

    async def close(self) -> None:
        """Close every websocket (going away) and forget all sessions."""
        await self.disconnect_all(1001)
        self._sessions.clear()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """The websocket endpoint: HELLO, then the client's ops until it goes away."""
        ws = web.WebSocketResponse(max_msg_size=0, timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)
        self.transports[ws] = request.transport
        await ws.send_json({"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        session: GatewaySession | None = None
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            op, data = payload.get("op"), payload.get("d")
            if op == OP_HEARTBEAT:
                if session is None or not session.silent:
                    await ws.send_json({"op": OP_HEARTBEAT_ACK})
            elif op in (OP_IDENTIFY, OP_RESUME) and session is not None:
                await ws.close(code=4005, message=b"Already authenticated.")
            elif op == OP_IDENTIFY:
                session = await self._identify(ws, data)
            elif op == OP_RESUME:
                session = await self._resume(ws, data)
            elif op == OP_REQUEST_GUILD_MEMBERS and session is not None:
                await self._member_chunk(session, data)
            elif op not in IGNORED_OPS:
                await ws.close(code=4001 if session else 4003, message=b"Unknown opcode.")
        self.transports.pop(ws, None)
        if session is not None and session.ws is ws:
            session.ws = None
            if ws.close_code in (1000, 1001):  # a clean close from the client ends the session
                self._sessions.pop(session.session_id, None)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: JSON) -> GatewaySession | None:
        session = GatewaySession(uuid.uuid4().hex, data, ws)
        if session.intents & INTENT_MESSAGE_CONTENT and not self.world.message_content_intent_allowed:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        if session.shard is not None and not 0 <= session.shard[0] < session.shard[1]:
            await ws.close(code=4010, message=b"Invalid shard.")
            return None
        async with session.lock:
            self._sessions[session.session_id] = session
            await session.emit("READY", self._ready(session))
            for guild in self.world.guilds.values():
                if session.routes(guild.id) and session.intents & INTENT_GUILDS:
                    await session.emit("GUILD_CREATE", self._view(session, "GUILD_CREATE", guild.payload()))
        return session

    def _ready(self, session: GatewaySession) -> JSON:
        guilds = [{"id": str(gid), "unavailable": True} for gid in self.world.guilds if session.routes(gid)]
        ready: JSON = {
            "v": 10,
            "user": self.world.bot_user.payload() | {"verified": True, "mfa_enabled": False, "email": None},
            "guilds": guilds,
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.url,
            "application": {"id": str(self.world.application_id), "flags": self.world.application_flags},
            "private_channels": [],
            "relationships": [],
            "geo_ordered_rtc_regions": [],
        }
        if session.shard is not None:
            ready["shard"] = list(session.shard)
        return ready

    async def _resume(self, ws: web.WebSocketResponse, data: JSON) -> GatewaySession | None:
        session = self._sessions.get(str(data.get("session_id")))
        last_seq = int(data.get("seq") or 0)
        if session is None or (session.backlog and session.backlog[0][0] > last_seq + 1):
            await ws.send_json({"op": OP_INVALID_SESSION, "d": False})
            return None
        async with session.lock:
            if session.ws is not None and session.ws is not ws:
                old, session.ws = session.ws, None
                await old.close(code=4000, message=b"Session resumed elsewhere.")
            session.ws, session.silent = ws, False
            session.resumes += 1
            for seq, frame in list(session.backlog):
                if seq > last_seq - self.resume_overlap:
                    await ws.send_str(frame)
            await session.emit("RESUMED", {})
        return session

    async def _member_chunk(self, session: GatewaySession, data: JSON) -> None:
        guild = self.world.guilds.get(int(data["guild_id"]))
        if guild is None:
            return
        members = list(guild.members.values())
        if data.get("user_ids"):
            wanted = {int(uid) for uid in data["user_ids"]}
            members = [member for member in members if member.id in wanted]
        elif data.get("query"):
            members = [member for member in members if member.name.lower().startswith(data["query"].lower())]
        if data.get("limit"):
            members = members[: int(data["limit"])]
        found = {member.id for member in members}
        chunk: JSON = {
            "guild_id": str(guild.id),
            "members": [member.payload() for member in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [uid for uid in data.get("user_ids") or [] if int(uid) not in found],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        async with session.lock:
            await session.emit("GUILD_MEMBERS_CHUNK", chunk)

    async def _flush(self) -> None:
        async with self._flush_lock:
            while self._outbox:
                event, data = self._outbox.popleft()
                guild_key = "id" if event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE") else "guild_id"
                guild_id = int(data[guild_key]) if data.get(guild_key) else None
                needed = (_GUILD_EVENT_INTENTS if guild_id else _DM_EVENT_INTENTS).get(event, 0)
                for session in list(self._sessions.values()):
                    if session.routes(guild_id) and session.intents & needed == needed:
                        async with session.lock:
                            await session.emit(event, self._view(session, event, data))

    def _view(self, session: GatewaySession, event: str, data: JSON) -> JSON:
        """What this session may see of an event, given its intents."""
        bot_id = self.world.bot_user.id
        if event == "GUILD_CREATE" and not session.intents & INTENT_GUILD_MEMBERS:
            return data | {"members": [m for m in data["members"] if int(m["user"]["id"]) == bot_id]}
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not session.intents & INTENT_MESSAGE_CONTENT:
            return data if content_visible(data, bot_id) else without_content(data)
        return data
