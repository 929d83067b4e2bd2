"""The model layer's errors that callers catch (config.json's own is config.UnsupportedModelError)."""
from __future__ import annotations


class CheckpointError(Exception):
    """The model directory cannot be loaded; the message names the file (and tensor)."""
