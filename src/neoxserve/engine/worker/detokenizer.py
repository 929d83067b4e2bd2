"""Token ids -> text that is safe to send: complete UTF-8 only, and never any part of a stop string.

The output, concatenated, is the request's bytes decoded with errors="replace" and cut where the first stop string
to complete begins. Generation ends there, so a stop string that would have begun earlier but completes later is
never seen (this differs from "cut at the earliest occurrence" only when one stop string contains another).
"""
from __future__ import annotations

import codecs
from typing import Protocol


class TokenBytes(Protocol):
    def token_bytes(self, token_id: int, skip_special_tokens: bool = True) -> bytes: ...


class IncrementalDetokenizer:
    def __init__(self, tokenizer: TokenBytes, stop: tuple[str, ...] = (), skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._max_held = max((len(s) for s in self._stop), default=1) - 1
        self._pending = ""   # decoded, not yet emitted: a suffix that may begin a stop string
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Text that became safe with this token ("" once stopped)."""
        if self.stopped:
            return ""
        data = self._tokenizer.token_bytes(token_id, self._skip_special_tokens)
        return self._advance(self._decoder.decode(data), final=False)

    def flush(self) -> str:
        """At the end of generation without a stop string: everything held back; an incomplete UTF-8 tail
        becomes U+FFFD."""
        if self.stopped:
            return ""
        return self._advance(self._decoder.decode(b"", final=True), final=True)

    def _advance(self, text: str, final: bool) -> str:
        if not self._stop:
            return text
        pending = self._pending + text
        cut = self._first_stop(pending)
        if cut is not None:
            self.stopped = True
            self._pending = ""
            return pending[:cut]
        held = 0 if final else self._held_suffix(pending)
        self._pending = pending[len(pending) - held:]
        return pending[:len(pending) - held]

    def _first_stop(self, text: str) -> int | None:
        """Start of the stop string that completes first in `text` (the longest if several end together).
        Emitted text never contains a stop string nor a stop-string prefix reaching the end, so searching the
        pending text is enough."""
        best: tuple[int, int] | None = None
        for s in self._stop:
            start = text.find(s)
            if start >= 0 and (best is None or (start + len(s), start) < best):
                best = (start + len(s), start)
        return None if best is None else best[1]

    def _held_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
        for n in range(min(len(text), self._max_held), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self._stop):
                return n
        return 0
