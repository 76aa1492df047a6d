"""Discord's documented object shapes where the sandbox's internal records differ from what the API answers.

The world stores one record per message (the gateway's view, with ``guild_id`` and ``member``); REST answers leave
those out, optional fields that are absent are left out rather than ``null``, and components get the ``id``
Discord assigns. These helpers turn records into what each surface documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._world import JSON

#: Message fields only the gateway's MESSAGE_CREATE / MESSAGE_UPDATE carry.
GATEWAY_ONLY_MESSAGE_FIELDS = ("guild_id", "member")
#: Interaction types (``InteractionTypes``) that the metadata of a message answers.
_COMPONENT, _MODAL_SUBMIT = 3, 5


def content_visible(message: JSON, bot_id: int) -> bool:
    """Whether a bot without the message-content intent may see this message's content (Discord's rule)."""
    if "guild_id" not in message or int(message["author"]["id"]) == bot_id:
        return True
    return any(int(user["id"]) == bot_id for user in message.get("mentions", []))


def without_content(message: JSON) -> JSON:
    """A copy of the message with what the message-content intent guards emptied."""
    return message | {"content": "", "embeds": [], "attachments": [], "components": []}


def rest_message(message: JSON) -> JSON:
    """A stored message as REST answers it: without the gateway-only fields (also in ``referenced_message``)."""
    data = {key: value for key, value in message.items() if key not in GATEWAY_ONLY_MESSAGE_FIELDS}
    if isinstance(data.get("referenced_message"), dict):
        data["referenced_message"] = rest_message(data["referenced_message"])
    return data


def without_nulls(data: JSON, *keys: str) -> JSON:
    """``data`` without those of ``keys`` whose value is ``None`` (absent optional fields are left out)."""
    return {key: value for key, value in data.items() if not (key in keys and value is None)}


def _tree(components: list[Any]) -> Iterator[JSON]:
    for component in components:
        if isinstance(component, dict):
            yield component
            yield from _tree(component.get("components") or [])
            for key in ("accessory", "component"):
                if isinstance(component.get(key), dict):
                    yield from _tree([component[key]])


def number_components(components: list[Any] | None) -> list[Any]:
    """The components with Discord's ``id`` on each: the bot's own ids kept, the others numbered from 1 in order,
    skipping ids already taken."""
    if not components:
        return []
    taken = {c["id"] for c in _tree(components) if isinstance(c.get("id"), int)}
    counter = 0
    for component in _tree(components):
        if not isinstance(component.get("id"), int):
            counter += 1
            while counter in taken:
                counter += 1
            component["id"] = counter
    return components


def interaction_metadata(payload: JSON, user: JSON, *, trigger: JSON | None = None) -> JSON:
    """``interaction_metadata`` of a message answering the interaction ``payload``: buttons and selects name the
    message they were on, modal submits the interaction that opened the modal (``trigger``)."""
    metadata: JSON = {
        "id": payload["id"],
        "type": payload["type"],
        "user": user,
        "authorizing_integration_owners": payload.get("authorizing_integration_owners", {}),
    }
    if payload["type"] == _COMPONENT and isinstance(payload.get("message"), dict):
        metadata["interacted_message_id"] = payload["message"]["id"]
    if payload["type"] == _MODAL_SUBMIT and trigger is not None:
        metadata["triggering_interaction_metadata"] = interaction_metadata(trigger, user)
    return metadata
