"""The spool's records: the writes kept on disk while the database is down, as JSON objects, and back."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from bot.core.text import reply_text, well_formed
from bot.durability import Record
from bot.storage.records import NewReply, PostInfo


def reply_record(item: NewReply) -> Record:
    """A new reply."""
    return {
        "op": "reply",
        "post": asdict(item.post),
        "message_id": item.message_id,
        "author_id": item.author_id,
        "content": item.content,
        "created_at": item.created_at.isoformat(),
    }


def reply_from_record(record: dict[str, Any]) -> NewReply:
    """The new reply a ``reply`` record holds."""
    return NewReply(
        PostInfo(**record["post"]),
        int(record["message_id"]),
        int(record["author_id"]),
        reply_text(record["content"]),
        datetime.fromisoformat(record["created_at"]),
    )


def edit_record(message_id: int, content: str, edited_at: datetime) -> Record:
    """An edit of a stored reply (its text well formed, as JSON must be)."""
    return {"op": "edit", "message_id": message_id, "content": well_formed(content), "edited_at": edited_at.isoformat()}


def edit_from_record(record: dict[str, Any]) -> tuple[int, str, datetime]:
    """The message id, text and time an ``edit`` record holds."""
    return int(record["message_id"]), reply_text(record["content"]), datetime.fromisoformat(record["edited_at"])


def delete_record(message_id: int) -> Record:
    """A deletion of a stored reply."""
    return {"op": "delete", "message_id": message_id}
