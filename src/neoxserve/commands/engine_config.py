"""Settings -> EngineConfig and RestartPolicy: the one place that decides what of the service's settings the
engine and its supervisor get."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from ..config import Settings
from ..engine.config import EngineConfig
from ..engine.restart_policy import RestartPolicy

T = TypeVar("T")


def _from_settings(cls: type[T], settings: Settings) -> T:
    """`cls` (a dataclass whose fields are named after Settings fields) filled from `settings`."""
    values: dict[str, Any] = {f.name: getattr(settings, f.name) for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**values)


def engine_config(settings: Settings) -> EngineConfig:
    """The engine's fields of `settings`."""
    return _from_settings(EngineConfig, settings)


def restart_policy(settings: Settings) -> RestartPolicy:
    """The supervisor's fields of `settings`."""
    return _from_settings(RestartPolicy, settings)
