"""One lock for every line the toolkit writes to an output stream.

JSON log lines (``logs``, ``logwriter``) and EMF documents (``emf``) share standard output, where CloudWatch and
Loki's agents read one JSON object per line. Each writer builds its whole text, lines and newlines, first and
writes it in one call under ``OUTPUT_LOCK``, so no line of one can land inside a line of the other. The lock is
re-entrant: a handler that logs while it writes takes it again on the same thread.
"""

from __future__ import annotations

import threading
from typing import IO

__all__ = ["OUTPUT_LOCK", "write_lines"]

OUTPUT_LOCK = threading.RLock()


def write_lines(stream: IO[str], text: str) -> None:
    """Write ``text`` (whole lines) to ``stream`` and flush it, under ``OUTPUT_LOCK``."""
    with OUTPUT_LOCK:
        stream.write(text)
        stream.flush()
