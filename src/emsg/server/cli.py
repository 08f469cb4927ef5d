"""`emsg server run`: settings from a TOML file and flags, then uvicorn."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import time
from collections.abc import Generator
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from emsg.server.federation.config import TlsSettings
from emsg.server.federation.keys import SigningKeyring
from emsg.server.settings import Settings, load_settings

server_app = typer.Typer(no_args_is_help=True, help="Run and manage a homeserver.")
log = logging.getLogger("emsg.server")


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM after its graceful shutdown, which ends the
    process with -15; a drained, orderly stop should exit 0 instead."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What is alive once the app has started (modules, classes, the services)
        # lives as long as the process: take it out of the collector's way, so that a
        # full collection walks only what was made since. Full collections paused
        # the event loop for 50-160 ms on the 2-core benchmark machine: the whole
        # latency tail of the cross-server benchmark.
        gc.collect()
        gc.freeze()

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


def bind(host: str, port: int) -> socket.socket:
    """The listening address, bound here rather than by uvicorn: a port that is taken
    or an address this machine does not have is then one line and exit 1 before
    anything starts, where uvicorn would start the app, log it and stop again."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def serve(settings: Settings, sock: socket.socket) -> None:
    host, port = settings.host_port
    # Imported here, not at the top: `emsg` loads this module for every client
    # command too, and the app (FastAPI, SQLAlchemy, alembic) takes 1.7 s to import.
    from emsg.server.app import create_app

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
        ssl_certfile=str(settings.tls.cert) if settings.tls.cert else None,
        ssl_keyfile=str(settings.tls.key) if settings.tls.key else None,
    )
    server = _Server(config)
    scheme = "https" if settings.tls.cert else "http"
    log.info("emsg homeserver for %s listening on %s://%s:%d", settings.domain, scheme, host, port)
    server.run(sockets=[sock])


@server_app.command()
def run(
    domain: Annotated[str | None, typer.Option(help="The domain this server serves.")] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to listen on.")] = None,
    data: Annotated[Path | None, typer.Option(help="The data folder.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="A TOML config file; flags override it.", exists=True)
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate chain (enables HTTPS).", exists=True)
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key.", exists=True)] = None,
) -> None:
    """Run the homeserver until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every request at INFO: a line per federation transaction, with the
    # peer's resolved address. The federation logger reports failures itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = load_settings(config, {"domain": domain, "listen": listen, "data": data})
        if tls_cert or tls_key:
            tls = TlsSettings(cert=tls_cert or settings.tls.cert, key=tls_key or settings.tls.key)
            settings = settings.model_copy(update={"tls": tls})
        if (settings.tls.cert is None) != (settings.tls.key is None):
            raise ValueError("TLS needs both a certificate and a key")
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        # Only the server's own user: the database holds password hashes and tokens.
        settings.data.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        typer.echo(f"error: cannot use the data folder {settings.data}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    try:
        sock = bind(*settings.host_port)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {settings.listen}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    with sock:
        serve(settings, sock)


@server_app.command("rotate-key")
def rotate_key(
    data: Annotated[Path, typer.Option(help="The data folder.")] = Path("data"),
) -> None:
    """Start a new federation signing key; the old one stays published for verification."""
    # A mistyped --data must not quietly start a keyring for a server that is not there.
    if not SigningKeyring.path_in(data).exists():
        typer.echo(
            f"error: no signing keys in {data}: not the data folder of a homeserver that"
            " has run (check --data)",
            err=True,
        )
        raise typer.Exit(2)
    now = time.time_ns() // 1_000_000
    try:
        key = SigningKeyring.load(data, now, 7 * 86_400_000).rotate(now)
    except OSError as exc:
        typer.echo(f"error: cannot write the signing keys in {data}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"new signing key {key.key_id}; restart the server to use it")
