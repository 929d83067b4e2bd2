"""The seam between the HTTP process and the engine process: what the HTTP side imports (no torch, nothing of
engine/worker/), typed messages, loud failures."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from multiprocessing import Pipe

import pytest

from neoxserve.engine.client import AsyncEngineClient, failure_error
from neoxserve.engine.errors import EngineDead, EngineInternalError, QueueTimeout
from neoxserve.engine.outputs import Delta, Failure
from neoxserve.engine.protocol import Ack, AckError, ModelInfo, Output, Ready
from neoxserve.engine.sampling_params import SamplingParams

# Imports the modules named on the command line (or, with --every, every module of api/ and engine/ outside
# engine/worker/), then prints the engine process's modules that got loaded: torch and engine/worker/.
_ENGINE_SIDE_LOADED = """
import importlib, pkgutil, sys

def walk(package):
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if info.name != "neoxserve.engine.worker":
            module = importlib.import_module(info.name)
            if info.ispkg:
                walk(module)

if sys.argv[1:] == ["--every"]:
    walk(importlib.import_module("neoxserve.api"))
    walk(importlib.import_module("neoxserve.engine"))
else:
    for name in sys.argv[1:]:
        importlib.import_module(name)
loaded = {"torch" if m.split(".")[0] == "torch" else m for m in sys.modules}
print(sorted(m for m in loaded if m == "torch" or m.startswith("neoxserve.engine.worker")))
"""


def _engine_side_loaded(*args: str) -> str:
    result = subprocess.run([sys.executable, "-c", _ENGINE_SIDE_LOADED, *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("module", ["neoxserve.engine.client", "neoxserve.engine.supervisor",
                                    "neoxserve.engine.spawn", "neoxserve.engine.process", "neoxserve.api.app",
                                    "neoxserve.commands.serve"])
def test_the_http_side_imports_no_torch_and_nothing_of_the_engine_process(module):
    assert _engine_side_loaded(module) == "[]"


def test_no_module_of_the_http_side_imports_torch_or_the_engine_process():
    assert _engine_side_loaded("--every") == "[]"


def test_the_import_check_sees_the_engine_process():
    loaded = _engine_side_loaded("neoxserve.engine.worker.core")
    assert "'torch'" in loaded and "'neoxserve.engine.worker.core'" in loaded and "'neoxserve.engine.worker'" in loaded


@pytest.mark.parametrize("failure,error", [(Failure.QUEUE_TIMEOUT, QueueTimeout),
                                           (Failure.STEP_FAILED, EngineInternalError)])
def test_a_failed_delta_is_raised_as_its_kind(failure, error):
    delta = Delta("r", "", [], 3, 0, finished=True, finish_reason="error", failure=failure, error="details")
    raised = failure_error(delta)
    assert type(raised) is error and str(raised) == "details"
    assert failure_error(Delta("r", "x", [1], 3, 1, finished=True, finish_reason="stop")) is None


def test_internal_ack_raises_engine_internal_error():
    """An unexpected exception while the engine admits a request is the engine's fault (336000 in the API)."""

    async def scenario():
        client = _client_without_process()
        stream = client.generate("r", [1], SamplingParams())
        client._dispatch(Output(acks=[Ack("r", AckError.INTERNAL, "KeyError: 'x'")]))
        with pytest.raises(EngineInternalError, match="KeyError"):
            await stream.__anext__()
        await client.shutdown(timeout=0)

    asyncio.run(scenario())


def test_an_unexpected_message_from_the_engine_fails_every_request():
    """The reader meets a message that is not an Output: the engine is stopped and pending requests fail."""

    async def scenario():
        client = _client_without_process()
        stream = client.generate("r", [1], SamplingParams())
        client._engine_ends[1].send(Ready(ModelInfo("m", "", 8, False)))
        with pytest.raises(EngineDead, match="unexpected message after start"):
            await asyncio.wait_for(stream.__anext__(), 10)
        assert not client.is_alive()
        await client.shutdown(timeout=0)

    asyncio.run(scenario())


def test_a_message_that_cannot_be_read_fails_every_request():
    """Any exception in the reader thread (here: bytes that do not unpickle) stops the engine and fails what is
    pending, rather than ending the thread silently with requests waiting on an engine that looks alive."""

    async def scenario():
        client = _client_without_process()
        stream = client.generate("r", [1], SamplingParams())
        client._engine_ends[1].send_bytes(b"not a pickle")
        with pytest.raises(EngineDead, match="the engine's messages cannot be read: UnpicklingError"):
            await asyncio.wait_for(stream.__anext__(), 10)
        assert not client.is_alive()
        await client.shutdown(timeout=0)

    asyncio.run(scenario())


class _NoProcess:
    """A stand-in for the engine process that never exits on its own."""

    def __init__(self) -> None:
        import threading
        self._stopped = threading.Event()
        self._r, self._w = Pipe(duplex=False)
        self.pid = None
        self.exitcode = None

    @property
    def sentinel(self):
        return self._r

    def is_alive(self) -> bool:
        return not self._stopped.is_set()

    def join(self, timeout=None) -> None:
        self._stopped.wait(timeout)

    def terminate(self) -> None:
        self._stopped.set()
        self.exitcode = -15
        self._w.send(b"")

    kill = terminate


def _client_without_process() -> AsyncEngineClient:
    requests_read, requests_write = Pipe(duplex=False)
    outputs_read, outputs_write = Pipe(duplex=False)
    client = AsyncEngineClient(_NoProcess(), requests_write, outputs_read, ModelInfo("m", "", 8, False), None,
                               asyncio.get_running_loop())
    client._engine_ends = (requests_read, outputs_write)   # kept open: the stand-in engine's side of the pipes
    return client
