"""The sandbox REST API: Discord's routes the bot uses, each request recorded for the tests."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ._faults import RestFaults
from ._gateway import Gateway
from ._http import BODY, UPLOADS, ApiError, Handler, RecordedRequest, Upload, json_response
from ._interactions import (
    CALLBACK_DEFERRED_MESSAGE,
    CALLBACK_DEFERRED_UPDATE,
    CALLBACK_MESSAGE,
    CALLBACK_UPDATE_MESSAGE,
    TYPE_APPLICATION_COMMAND,
    Interactions,
    PendingInteraction,
)
from ._limits import check_message, check_token_alive
from ._ratelimit import RateLimits
from ._rest_app import AppRoutes
from ._shapes import (
    content_visible,
    interaction_metadata,
    number_components,
    rest_message,
    without_content,
    without_nulls,
)
from ._world import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    JSON,
    MESSAGE_CHAT_INPUT_COMMAND,
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    Channel,
    World,
    iso_now,
)

API_PREFIX = "/api/v10"
MAX_UPLOAD = 25 * 1024 * 1024
#: Message flags a bot may set when sending: SUPPRESS_EMBEDS, EPHEMERAL, SUPPRESS_NOTIFICATIONS.
_SENDABLE_FLAGS = (1 << 2) | FLAG_EPHEMERAL | (1 << 12)


async def _read_body(request: web.Request) -> tuple[Any, list[Upload]]:
    """The JSON body (for multipart: ``payload_json``) and the uploads as ``(field, filename, bytes)``."""
    if request.content_type == "multipart/form-data":
        form = await request.post()
        uploads = [
            (name, value.filename, value.file.read())
            for name, value in form.items()
            if isinstance(value, web.FileField)
        ]
        raw = form.get("payload_json")
        return (json.loads(raw) if isinstance(raw, str | bytes) else None), uploads
    text = await request.text() if request.can_read_body else ""
    return (json.loads(text) if text else None), []


class RestApi(AppRoutes):
    """Discord's REST routes under ``/api/v10`` on an aiohttp application."""

    def __init__(self, world: World, gateway: Gateway, interactions: Interactions) -> None:
        self.world = world
        self.gateway = gateway
        self.interactions = interactions
        self.requests: list[RecordedRequest] = []
        #: ``http://host:port`` once bound; attachment URLs start with it.
        self.origin = ""
        #: What ``GET /gateway/bot`` recommends as the shard count.
        self.recommended_shards = 1
        self.uploads: dict[int, tuple[str, bytes]] = {}
        self._waiters: list[tuple[Callable[[RecordedRequest], bool], asyncio.Future[RecordedRequest]]] = []
        #: Discord's rate limits (off until switched on) and planned failures.
        self.ratelimits = RateLimits(API_PREFIX)
        self.faults = RestFaults(API_PREFIX)
        middlewares = [self._record, self.ratelimits.middleware, self.faults.middleware]
        self.app = web.Application(middlewares=middlewares, client_max_size=MAX_UPLOAD)
        self._add_routes()

    def _add_routes(self) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self.get_me),
            ("POST", "/users/@me/channels", self.open_dm),
            ("GET", "/users/{user_id}", self.get_user),
            ("GET", "/oauth2/applications/@me", self.get_application),
            ("GET", "/applications/@me", self.get_application),
            ("GET", "/gateway", self.get_gateway),
            ("GET", "/gateway/bot", self.get_gateway_bot),
            ("GET", "/applications/{app_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/commands", self.put_commands),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.get_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands),
            ("GET", "/guilds/{guild_id}", self.get_guild),
            ("GET", "/guilds/{guild_id}/channels", self.get_guild_channels),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member),
            ("GET", "/channels/{channel_id}", self.get_channel),
            ("POST", "/channels/{channel_id}/typing", self.typing),
            ("GET", "/channels/{channel_id}/messages", self.get_messages),
            ("POST", "/channels/{channel_id}/messages", self.post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self.thread_from_message),
            ("POST", "/channels/{channel_id}/threads", self.thread_without_message),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self.add_reaction),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self.remove_reaction,
            ),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self.post_followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self.get_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self.edit_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self.delete_webhook_message),
        ]
        for method, path, handler in routes:
            self.app.router.add_route(method, API_PREFIX + path, handler)
        self.app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.download)

    # ----------------------------------------------------------------- recording

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        body: Any = None
        uploads: list[Upload] = []
        try:
            body, uploads = await _read_body(request)
            request[BODY], request[UPLOADS] = body, uploads
            response = await handler(request)
        except ApiError as exc:
            response = json_response(exc.body(), exc.status)
        except web.HTTPException as exc:  # the router's 404 / 405
            response = json_response({"message": f"{exc.status}: {exc.reason}", "code": 0}, exc.status)
        except (ValueError, KeyError, TypeError) as exc:  # malformed ids or bodies
            response = json_response({"message": f"Invalid Form Body ({exc!r})", "code": 50035}, 400)
        resource = request.match_info.route.resource
        answer = response.body if isinstance(response, web.Response) else None
        record = RecordedRequest(
            method=request.method,
            path=request.path.removeprefix(API_PREFIX),
            query=dict(request.query),
            json=body,
            files=[(filename, data) for _, filename, data in uploads],
            time=time.time(),
            route=resource.canonical.removeprefix(API_PREFIX) if resource is not None else None,
            status=response.status,
            response=json.loads(answer) if isinstance(answer, bytes) and answer else None,
        )
        self.requests.append(record)
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(record):
                future.set_result(record)
        return response

    async def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = 10,  # noqa: ASYNC109 - part of the sandbox's API
        *,
        include_past: bool = True,
    ) -> RecordedRequest:
        """The first recorded request matching ``predicate`` (past ones too unless ``include_past=False``)."""
        if include_past:
            for record in self.requests:
                if predicate(record):
                    return record
        waiter = (predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter[1], timeout)
        finally:
            self._waiters.remove(waiter)

    # ----------------------------------------------------------------- lookups

    def _pending(self, request: web.Request) -> PendingInteraction:
        pending = self.interactions.by_token.get(request.match_info["token"])
        right_app = int(request.match_info["app_id"]) == self.world.application_id
        if pending is None or not right_app or not pending.acknowledged.is_set():
            raise ApiError(404, 10015, "Unknown Webhook")
        check_token_alive(pending.created, self.interactions.token_lifetime)
        return pending

    def _webhook_message(self, request: web.Request) -> tuple[PendingInteraction, JSON]:
        pending = self._pending(request)
        wanted = request.match_info["message_id"]
        if wanted == "@original":
            message = pending.result.message
        else:
            message = next((m for m in pending.result.followups if m["id"] == wanted), None)
        if message is None:
            raise ApiError(404, 10008, "Unknown Message")
        return pending, message

    def _visible(self, message: JSON) -> JSON:
        """What a REST read returns: without the message-content intent, content is limited as on Discord."""
        if self.world.message_content_intent_allowed or content_visible(message, self.world.bot_user.id):
            return rest_message(message)
        return rest_message(without_content(message))

    # ----------------------------------------------------------------- messages

    def _attachments(self, channel: Channel, body: JSON, uploads: list[Upload]) -> list[JSON]:
        specs = {str(spec.get("id")): spec for spec in body.get("attachments") or []}
        attachments = []
        for field_name, filename, data in uploads:
            spec = specs.get(field_name.removeprefix("files[").removesuffix("]"), {})
            attachment_id = self.world.snowflakes.next()
            name = spec.get("filename") or filename
            self.uploads[attachment_id] = (name, data)
            url = f"{self.origin}/attachments/{channel.id}/{attachment_id}/{quote(name)}"
            attachment = {
                "id": str(attachment_id),
                "filename": name,
                "description": spec.get("description"),
                "content_type": _content_type(name),
                "size": len(data),
                "url": url,
                "proxy_url": url,
                "flags": 0,
            }
            attachments.append(without_nulls(attachment, "description"))
        return attachments

    def _bot_message(
        self,
        channel: Channel,
        body: JSON,
        uploads: list[Upload],
        *,
        message_type: int = MESSAGE_DEFAULT,
        extra: JSON | None = None,
    ) -> JSON:
        check_message(body)
        content = body.get("content") or ""
        attachments = self._attachments(channel, body, uploads)
        parts = (content, body.get("embeds"), attachments, body.get("components"), body.get("sticker_ids"))
        if not any(parts):
            raise ApiError(400, 50006, "Cannot send an empty message")
        return self.world.build_message(
            channel,
            self.world.bot_user,
            content,
            message_type=message_type,
            flags=(body.get("flags") or 0) & _SENDABLE_FLAGS,
            embeds=body.get("embeds"),
            components=number_components(body.get("components")),
            attachments=attachments,
            extra=extra,
        )

    def _edit(self, channel: Channel, message: JSON, body: JSON, uploads: list[Upload]) -> None:
        check_message(body)
        for key, empty in (("content", ""), ("embeds", []), ("components", [])):
            if key in body:
                message[key] = body[key] or empty
        message["components"] = number_components(message["components"])
        if "attachments" in body:
            keep = {str(spec.get("id")) for spec in body["attachments"] or []}
            message["attachments"] = [a for a in message["attachments"] if a["id"] in keep]
        message["attachments"] = message["attachments"] + self._attachments(channel, body, uploads)
        message["flags"] &= ~FLAG_LOADING
        message["edited_timestamp"] = iso_now()

    async def publish(self, channel: Channel, message: JSON) -> None:
        """Store a new message and dispatch MESSAGE_CREATE (ephemeral ones stay private)."""
        self.world.store_message(channel, message)
        if not message["flags"] & FLAG_EPHEMERAL:
            await self.gateway.dispatch("MESSAGE_CREATE", dict(message))

    async def updated(self, message: JSON) -> None:
        """Dispatch MESSAGE_UPDATE for an edited message (unless it is ephemeral)."""
        if not message["flags"] & FLAG_EPHEMERAL:
            await self.gateway.dispatch("MESSAGE_UPDATE", dict(message))

    async def deleted(self, channel: Channel, message: JSON) -> None:
        """Remove a message and dispatch MESSAGE_DELETE (unless it was ephemeral)."""
        self.world.remove_message(channel, int(message["id"]))
        if not message["flags"] & FLAG_EPHEMERAL:
            event: JSON = {"id": message["id"], "channel_id": str(channel.id)}
            if channel.guild_id is not None:
                event["guild_id"] = str(channel.guild_id)
            await self.gateway.dispatch("MESSAGE_DELETE", event)

    async def post_message(self, request: web.Request) -> web.Response:
        """POST /channels/{channel_id}/messages (JSON or multipart with files)."""
        channel = self._channel(request)
        body = request[BODY] or {}
        extra: JSON = {}
        reference = body.get("message_reference")
        if reference:
            ref_channel = int(reference.get("channel_id") or channel.id)
            referenced = self.world.find_message(ref_channel, int(reference["message_id"]))
            if referenced is None and reference.get("fail_if_not_exists", True):
                raise ApiError(400, 50035, "Invalid Form Body: Unknown message")
            extra["message_reference"] = {
                "type": 0,
                "message_id": reference["message_id"],
                "channel_id": str(ref_channel),
            }
            if channel.guild_id is not None:
                extra["message_reference"]["guild_id"] = str(channel.guild_id)
            extra["referenced_message"] = referenced
        if "nonce" in body:
            extra["nonce"] = body["nonce"]
        kind = MESSAGE_REPLY if reference else MESSAGE_DEFAULT
        message = self._bot_message(channel, body, request[UPLOADS], message_type=kind, extra=extra)
        await self.publish(channel, message)
        return json_response(rest_message(message))

    async def get_messages(self, request: web.Request) -> web.Response:
        """GET /channels/{channel_id}/messages: newest first, with limit / before / after / around."""
        channel = self._channel(request)
        query = request.query
        limit = max(1, min(int(query.get("limit", 50)), 100))
        history = channel.messages
        if "before" in query:
            picked = [m for m in history if int(m["id"]) < int(query["before"])][-limit:]
        elif "after" in query:
            picked = [m for m in history if int(m["id"]) > int(query["after"])][:limit]
        elif "around" in query:
            around = int(query["around"])
            older = [m for m in history if int(m["id"]) < around][-(limit // 2) :] if limit > 1 else []
            picked = older + [m for m in history if int(m["id"]) >= around][: limit - len(older)]
        else:
            picked = history[-limit:]
        return json_response([self._visible(m) for m in reversed(picked)])

    async def get_message(self, request: web.Request) -> web.Response:
        """GET /channels/{channel_id}/messages/{message_id}."""
        return json_response(self._visible(self._message(self._channel(request), request)))

    async def edit_message(self, request: web.Request) -> web.Response:
        """PATCH /channels/{channel_id}/messages/{message_id} (the bot's own messages only)."""
        channel = self._channel(request)
        message = self._message(channel, request)
        if int(message["author"]["id"]) != self.world.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._edit(channel, message, request[BODY] or {}, request[UPLOADS])
        await self.updated(message)
        return json_response(rest_message(message))

    async def delete_message(self, request: web.Request) -> web.Response:
        """DELETE /channels/{channel_id}/messages/{message_id}."""
        channel = self._channel(request)
        await self.deleted(channel, self._message(channel, request))
        return web.Response(status=204)

    async def typing(self, request: web.Request) -> web.Response:
        """POST /channels/{channel_id}/typing."""
        self._channel(request)
        return web.Response(status=204)

    # ----------------------------------------------------------------- interactions

    async def interaction_callback(self, request: web.Request) -> web.Response:
        """POST /interactions/{id}/{token}/callback: the bot's first answer (once, within the deadline)."""
        pending = self.interactions.by_id.get(int(request.match_info["interaction_id"]))
        if pending is None:
            raise ApiError(404, 10062, "Unknown interaction")
        if pending.token != request.match_info["token"]:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if pending.acknowledged.is_set():
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - pending.created > self.interactions.ack_deadline:
            raise ApiError(404, 10062, "Unknown interaction")
        body = request[BODY] or {}
        kind, data = int(body["type"]), body.get("data") or {}
        message = await self._callback_message(pending, kind, data, request[UPLOADS])
        pending.result.type, pending.result.data, pending.result.message = kind, data, message
        pending.acknowledged.set()
        pending.touch(answered=kind != CALLBACK_DEFERRED_MESSAGE)
        ephemeral = bool(message and message["flags"] & FLAG_EPHEMERAL)
        answer: JSON = {
            "id": str(pending.id),
            "type": pending.payload["type"],
            "response_message_loading": kind == CALLBACK_DEFERRED_MESSAGE,
            "response_message_ephemeral": ephemeral,
        }
        if message is not None:
            answer["response_message_id"] = message["id"]
        if message is None or kind not in (CALLBACK_MESSAGE, CALLBACK_UPDATE_MESSAGE):
            return json_response({"interaction": answer})  # only types 4 and 7 carry the message
        return json_response({"interaction": answer, "resource": {"type": kind, "message": rest_message(message)}})

    async def _callback_message(
        self, pending: PendingInteraction, kind: int, data: JSON, uploads: list[Upload]
    ) -> JSON | None:
        """The message a callback creates or updates (``None`` for autocomplete and modals)."""
        channel, source, origin = pending.channel, pending.source_message, self._origin(pending)
        slash = pending.payload["type"] == TYPE_APPLICATION_COMMAND
        message_type = MESSAGE_CHAT_INPUT_COMMAND if slash else MESSAGE_DEFAULT
        if kind == CALLBACK_MESSAGE:
            message = self._bot_message(channel, data, uploads, message_type=message_type, extra=origin)
        elif kind == CALLBACK_DEFERRED_MESSAGE:
            flags = ((data.get("flags") or 0) & FLAG_EPHEMERAL) | FLAG_LOADING
            message = self.world.build_message(
                channel, self.world.bot_user, flags=flags, message_type=message_type, extra=origin
            )
        elif kind in (CALLBACK_UPDATE_MESSAGE, CALLBACK_DEFERRED_UPDATE) and source is not None:
            if kind == CALLBACK_UPDATE_MESSAGE:
                self._edit(channel, source, data, uploads)
                await self.updated(source)
            return source
        else:
            return None
        await self.publish(channel, message)
        return message

    def _origin(self, pending: PendingInteraction) -> JSON:
        """The fields that mark a message as an answer to an interaction."""
        user = pending.payload["member"]["user"] if "member" in pending.payload else pending.payload["user"]
        app_id = str(self.world.application_id)
        trigger = pending.trigger.payload if pending.trigger is not None else None
        metadata = interaction_metadata(pending.payload, user, trigger=trigger)
        return {"webhook_id": app_id, "application_id": app_id, "interaction_metadata": metadata}

    async def post_followup(self, request: web.Request) -> web.Response:
        """POST /webhooks/{app_id}/{token}: a followup message (``?wait=true`` returns it)."""
        pending = self._pending(request)
        body, uploads = request[BODY] or {}, request[UPLOADS]
        message = self._bot_message(pending.channel, body, uploads, extra=self._origin(pending))
        await self.publish(pending.channel, message)
        pending.result.followups.append(message)
        pending.touch(answered=True)
        if request.query.get("wait", "").lower() not in ("true", "1"):
            return web.Response(status=204)
        return json_response(rest_message(message))

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        """GET /webhooks/{app_id}/{token}/messages/{message_id or @original}."""
        return json_response(rest_message(self._webhook_message(request)[1]))

    async def edit_webhook_message(self, request: web.Request) -> web.Response:
        """PATCH /webhooks/{app_id}/{token}/messages/{message_id or @original}."""
        pending, message = self._webhook_message(request)
        self._edit(pending.channel, message, request[BODY] or {}, request[UPLOADS])
        await self.updated(message)
        pending.touch(answered=True)
        return json_response(rest_message(message))

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        """DELETE /webhooks/{app_id}/{token}/messages/{message_id or @original}."""
        pending, message = self._webhook_message(request)
        await self.deleted(pending.channel, message)
        pending.touch(answered=True)
        return web.Response(status=204)

    # ----------------------------------------------------------------- channels and attachments

    async def get_channel(self, request: web.Request) -> web.Response:
        """GET /channels/{channel_id}."""
        return json_response(self._channel(request).payload())

    async def download(self, request: web.Request) -> web.Response:
        """GET /attachments/...: the bytes of an uploaded file (the sandbox's CDN)."""
        upload = self.uploads.get(int(request.match_info["attachment_id"]))
        if upload is None:
            raise web.HTTPNotFound()
        name, data = upload
        return web.Response(body=data, content_type=_content_type(name))


def _content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
