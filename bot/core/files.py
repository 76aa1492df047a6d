"""Writing files whole or not at all: every output goes to a temporary file in the target's folder, is flushed to
disk, then renamed over the target, so a reader (or a later run) never sees half a file, and a failed write leaves
the previous file as it was."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _named(exc: OSError, path: Path) -> OSError:
    """The same error (same subclass, picked by errno) naming the target rather than the temporary file."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


@contextmanager
def atomic_writer(path: Path, *, binary: bool = False, mode: int = 0o644) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``, on an error it is
    removed and ``path`` is untouched. An :class:`OSError` names ``path`` (the folder is missing, not writable …)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        handle: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        with handle as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it private; outputs are for whoever may read the folder
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _named(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    with atomic_writer(path) as fh:
        fh.write(text)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    with atomic_writer(path, binary=True) as fh:
        fh.write(data)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` whole or not at all (its folder is created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
