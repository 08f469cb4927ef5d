"""`emsg server run`: settings from a TOML file and flags, then uvicorn."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Generator
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from emsg.server.app import create_app
from emsg.server.settings import Settings, load_settings

server_app = typer.Typer(no_args_is_help=True, help="Run and manage a homeserver.")
log = logging.getLogger("emsg.server")


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM after its graceful shutdown, which ends the
    process with -15; a drained, orderly stop should exit 0 instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(settings: Settings) -> None:
    host, port = settings.host_port
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        ws="wsproto",
        http="httptools",
        loop="uvloop",
        ws_max_size=settings.limits.ws_max_frame,
        # A zlib context per socket costs ~100 KiB of memory; frames are ciphertext,
        # which does not compress anyway.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_seconds),
        lifespan="on",
        access_log=False,
        log_level="info",
        proxy_headers=False,
        server_header=False,
    )
    server = _Server(config)
    log.info("emsg homeserver for %s listening on http://%s:%d", settings.domain, host, port)
    server.run()


@server_app.command()
def run(
    domain: Annotated[str | None, typer.Option(help="The domain this server serves.")] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to listen on.")] = None,
    data: Annotated[Path | None, typer.Option(help="The data folder.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="A TOML config file; flags override it.", exists=True)
    ] = None,
) -> None:
    """Run the homeserver until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings(config, {"domain": domain, "listen": listen, "data": data})
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings.data.mkdir(parents=True, exist_ok=True)
    serve(settings)
