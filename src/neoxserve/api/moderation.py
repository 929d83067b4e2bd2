"""Input moderation behind `is_safe`: a word and pattern list read once from settings.moderation_file.

File format: one entry per line; `re:` starts a Python regular expression; other lines are words matched
case-insensitively as substrings; blank lines and lines starting with `#` are ignored.
"""
from __future__ import annotations

import re
from pathlib import Path


class ModerationError(ValueError):
    """The moderation file cannot be used (unreadable or a bad pattern); the message names file and line."""


class Moderator:
    def __init__(self, words: list[str] | None = None, patterns: list[re.Pattern[str]] | None = None) -> None:
        self.words = [w.casefold() for w in words or []]
        self.patterns = patterns or []

    @classmethod
    def from_file(cls, path: Path | None) -> Moderator:
        if path is None:
            return cls()
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ModerationError(f"moderation file {path}: {e}") from e
        words, patterns = [], []
        for number, line in enumerate(lines, 1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if entry.startswith("re:"):
                try:
                    patterns.append(re.compile(entry[3:].strip(), re.IGNORECASE))
                except re.error as e:
                    raise ModerationError(f"moderation file {path} line {number}: bad regex: {e}") from e
            else:
                words.append(entry)
        return cls(words, patterns)

    def is_safe(self, text: str) -> bool:
        if self.words:  # casefolding a long prompt is only worth it with words to look for
            folded = text.casefold()
            if any(w in folded for w in self.words):
                return False
        return not any(p.search(text) for p in self.patterns)
