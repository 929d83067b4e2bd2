"""Settings -> EngineConfig: the one place that decides what of the service's settings the engine gets."""
from __future__ import annotations

from dataclasses import fields

from ..config import Settings
from ..engine.config import EngineConfig


def engine_config(settings: Settings) -> EngineConfig:
    """The engine's fields of `settings` (EngineConfig's fields are named after the Settings fields)."""
    return EngineConfig(**{f.name: getattr(settings, f.name) for f in fields(EngineConfig)})
