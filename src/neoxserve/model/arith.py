"""Integer arithmetic shared by the model and the engine."""
from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """Ceiling division for non-negative a and positive b: how many blocks of b hold a items."""
    return -(-a // b)
