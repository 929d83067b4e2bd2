"""`neoxserve serve`: start the engine process and the Qianfan-compatible HTTP server.

On a fresh data directory the loaded model is published as a service and an app `default` is created; its keys
and a ready-to-paste curl pair are printed once, and so is the web console's admin key (on the first start that
serves the console).

Exit codes: 0 after a clean shutdown (SIGINT / SIGTERM), 1 when startup fails, 3 when the engine cannot be brought
back and `engine_failure_action` is `exit` (docs/operations.md, "Engine supervision").
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shlex
import signal
import sys
from typing import TYPE_CHECKING
from collections.abc import Iterator

import uvicorn

from ..api.route_table import OAUTH_TOKEN, V1_COMPLETION
from ..choices import DEMO_MODEL, DEMO_RANDOM_MODEL, DTYPES
from ..config import Settings
from .model_flags import LOAD_FLAGS, add_load_arguments
from .speculative_flags import SPECULATIVE_FLAGS, add_speculative_arguments

if TYPE_CHECKING:
    from ..platform import NewKeys
from .engine_config import engine_config, restart_policy

log = logging.getLogger("neoxserve.serve")

ENGINE_FAILED = 3   # exit code: the engine cannot be brought back (engine_failure_action = "exit")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("serve", help="serve the Qianfan v1 completions API",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="Hugging Face model directory, 'demo' (default: the embedded trained toy model) or "
                   "'demo-random' (random weights)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8360)")
    p.add_argument("--data-dir", dest="data_dir", help="apps, tokens, usage and the demo model live here")
    p.add_argument("--api-name", dest="api_name", help="name the model is published under")
    p.add_argument("--dtype", choices=DTYPES)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    add_load_arguments(p)
    add_speculative_arguments(p)
    p.add_argument("--store-url", dest="store_url", help="'' = SQLite in the data dir; redis://host:port/db")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    flags = {k: getattr(args, k) for k in ("model", "host", "port", "data_dir", "api_name", "dtype", "device",
                                           "store_url", *LOAD_FLAGS, *SPECULATIVE_FLAGS)}
    from pydantic import ValidationError

    from .common import EXIT_BAD_INPUT, first_error

    try:
        settings = Settings.load(getattr(args, "config", None), **flags)
    except ValidationError as e:
        print(f"neoxserve serve: invalid settings: {first_error(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from ..engine.errors import EngineDead
    from ..platform import AdminError
    from ..api.moderation import ModerationError

    try:
        return asyncio.run(serve(settings))
    except (EngineDead, AdminError, ModerationError, OSError) as e:
        print(f"neoxserve serve: {e}", file=sys.stderr)
        return 1


def base_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def banner(settings: Settings, api_name: str, keys: NewKeys, model: str) -> str:
    base = base_url(settings)
    token_url = (f"{base}{OAUTH_TOKEN.path}?grant_type=client_credentials"
                 f"&client_id={keys.api_key}&client_secret={keys.secret_key}")
    completion_url = f"{base}{V1_COMPLETION.path.format(api_name=api_name)}?access_token=ACCESS_TOKEN"
    lines = [
        f"Published service '{api_name}' and created app '{keys.name}'. Its keys are shown only this once:",
        f"  API Key:    {keys.api_key}",
        f"  Secret Key: {keys.secret_key}",
    ]
    if keys.access_key:
        lines += [f"  IAM Access Key: {keys.access_key}",
                  f"  IAM Secret Key: {keys.secret_access_key}"]
    lines += [
        "Try it (put the access_token of the first answer in place of ACCESS_TOKEN):",
        f"  curl {shlex.quote(token_url)}",
        f"  curl -XPOST {shlex.quote(completion_url)} -d '{{\"prompt\":\"Introduce the city Beijing\"}}'",
    ]
    if model == DEMO_MODEL:
        lines.append("The demo model is a toy trained here for minutes: it writes English-looking phrases, "
                     "not knowledge.")
    elif model == DEMO_RANDOM_MODEL:
        lines.append("The demo-random model has random weights: its output is random noise.")
    return "\n".join(lines)


def console_banner(settings: Settings, admin_key: str) -> str:
    return "\n".join([
        f"Web console: {base_url(settings)}/console",
        f"  Admin key: {admin_key}",
        "The admin key is shown only this once ('neoxserve admin rotate-key' makes a new one).",
    ])


class _Server(uvicorn.Server):
    """Without uvicorn's own signal capture: it re-raises SIGTERM after shutdown, which would kill this process
    before the engine process is stopped."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings) -> int:
    from ..api.app import create_app
    from ..api.http_server import connection_limits, guarded_protocol
    from ..engine.supervisor import EngineSupervisor
    from ..platform import Platform

    platform = Platform.open(settings)   # first: a bad store or key fails before the model is loaded
    config = engine_config(settings)
    engine = None
    watcher = None
    try:
        engine = await EngineSupervisor.start(config, restart_policy(settings))
        info = engine.model_info
        api_name = settings.api_name or info.name   # the one place the published name is decided
        keys = platform.bootstrap(api_name, info.name)
        if keys is not None:
            print(banner(settings, api_name, keys, config.model), flush=True)
        admin_key = None
        if settings.console and settings.admin_key:
            platform.admin.apply_configured_key()
        elif settings.console:
            admin_key = platform.admin.create_key()
        if admin_key is not None:
            print(console_banner(settings, admin_key), flush=True)
        app = create_app(settings, engine, platform)
        server = _Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                                        access_log=False, http=guarded_protocol(connection_limits(settings)),
                                        timeout_keep_alive=settings.keep_alive_timeout_seconds,
                                        # X-Forwarded-* only from the proxies named (uvicorn trusts 127.0.0.1's)
                                        proxy_headers=bool(settings.trusted_proxies),
                                        forwarded_allow_ips=settings.trusted_proxies or None))
        loop = asyncio.get_running_loop()

        def stop() -> None:
            server.force_exit = server.should_exit  # a second signal skips waiting for open streams
            server.should_exit = True

        exit_code = 0

        async def when_the_engine_fails() -> None:
            nonlocal exit_code
            assert engine is not None
            await engine.wait_failed()   # the supervisor has logged why
            if settings.engine_failure_action == "exit":
                log.error("exiting with code %d (engine_failure_action = exit)", ENGINE_FAILED)
                exit_code = ENGINE_FAILED
                server.should_exit = True
            else:
                log.error("staying up (engine_failure_action = stay): model calls answer 336000 and /ready 503 "
                          "until the server is restarted")

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        watcher = loop.create_task(when_the_engine_fails())
        await server.serve()
        return exit_code if server.started else 1
    finally:
        if watcher is not None:
            watcher.cancel()
        if engine is not None:
            await engine.shutdown()
        platform.close()
        log.info("stopped")
