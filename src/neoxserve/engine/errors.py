"""Errors the engine client raises. The API maps them to Qianfan error codes."""


class EngineError(Exception):
    """Base class."""


class EngineOverloaded(EngineError):
    """The bounded waiting queue is full (requests or queued tokens): refused at once. API: 336100."""


class RequestRejected(EngineError):
    """The request can never run, e.g. prompt + max_new_tokens exceeds the model context. API: 336003."""


class EngineDead(EngineError):
    """The engine process is gone or did not start. API: 336000."""


class EngineInternalError(EngineError):
    """The step running this request failed (e.g. out of memory); other requests carry on. API: 336000."""


class QueueTimeout(EngineError):
    """The request waited longer than its deadline before starting. API: 336100."""
