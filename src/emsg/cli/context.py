"""Where a command gets its profile and secrets, and how it runs and fails.

`guarded` is the one place where exceptions become exit codes and one-line errors;
every command is wrapped in it. Secrets come only from `EMSG_PASSWORD` or a hidden
prompt, never from an argument.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer

from emsg.cli.exits import Exit, error_name, exit_for
from emsg.cli.output import error_line
from emsg.proto.errors import EmsgError
from emsg.proto.ids import Address

if TYPE_CHECKING:
    from emsg.client import Client

HOME_ENV = "EMSG_HOME"
PASSWORD_ENV = "EMSG_PASSWORD"
RECOVERY_ENV = "EMSG_RECOVERY_KEY"
DEBUG_ENV = "EMSG_DEBUG"
DEFAULT_HOME = Path("~/.emsg")

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CliState:
    """What the root callback resolved for every subcommand."""

    home: Path


class CliFailure(Exception):
    """An expected failure found by the CLI itself (not by the client or server)."""

    def __init__(self, exit_code: Exit, code: str, message: str) -> None:
        super().__init__(message)
        self.exit_code, self.code, self.message = exit_code, code, message


def resolve_home(option: Path | None) -> Path:
    return (option or DEFAULT_HOME).expanduser()


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState(resolve_home(None))


def parse_address(raw: str) -> str:
    """The canonical text of an address typed by the user (`InvalidAddress` if bad)."""
    return str(Address.parse(raw))


def read_password(prompt: str = "Password", *, confirm: bool = False) -> str:
    """`EMSG_PASSWORD` when set; else a hidden prompt (twice to `confirm`) on a terminal;
    else the first line of stdin (`... | emsg ...`), so nothing secret is ever an argument."""
    return read_secret(PASSWORD_ENV, prompt, confirm=confirm, what="password")


def read_secret(env: str, prompt: str, *, confirm: bool = False, what: str = "secret") -> str:
    """A secret from `env`, a hidden prompt, or the next line of piped stdin."""
    from_env = os.environ.get(env)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        piped = sys.stdin.readline().rstrip("\r\n")
        if piped:
            return piped
        raise CliFailure(Exit.AUTH, f"no_{what.replace(' ', '_')}",
                         f"no {what}: set {env} or use a terminal")  # fmt: skip
    try:
        answer: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    except typer.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise CliFailure(Exit.AUTH, f"no_{what.replace(' ', '_')}", f"no {what} given") from None
    return answer


def require_profile(home: Path) -> None:
    """Fail early, before asking for a passphrase, when `home` holds no profile at all."""
    if not home.is_dir() or not any(home.iterdir()):
        raise CliFailure(
            Exit.NO_PROFILE,
            "no_profile",
            f"no profile in {home}: run `emsg account register` or `emsg account login` first"
            f" (or pass --home / set {HOME_ENV})",
        )


def with_client(ctx: typer.Context, work: Callable[[Client], Awaitable[T]]) -> T:
    """Open the profile of `--home`, run `work` with the client, and close it."""
    return with_client_and_password(ctx, lambda client, _password: work(client))


def with_client_and_password(ctx: typer.Context, work: Callable[[Client, str], Awaitable[T]]) -> T:
    """`with_client` for work that needs the account password too (it is the passphrase)."""
    home = state(ctx).home
    require_profile(home)
    password = read_password(f"Passphrase for {home}")

    async def main() -> T:
        from emsg.client import Client

        async with await Client.open(home, password) as client:
            return await work(client, password)

    return asyncio.run(main())


def with_new_session(
    ctx: typer.Context,
    action: str,
    address: str,
    server: str | None,
    work: Callable[[Client], Awaitable[T]],
) -> T:
    """`register` or `login` `address` into `--home`, then run `work` with the new client."""
    home = state(ctx).home
    password = read_password(f"Password for {address}", confirm=action == "register")

    async def main() -> T:
        from emsg.client import Client

        start = Client.register if action == "register" else Client.login
        async with await start(home, address, password, server=server) as client:
            return await work(client)

    return asyncio.run(main())


async def until_terminated(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` until it ends or SIGTERM arrives; SIGTERM is a clean stop, not an error."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        if task is not None:
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await work
    except asyncio.CancelledError:
        if not terminated or task is None:
            raise  # Ctrl-C: asyncio.run turns this into KeyboardInterrupt
        task.uncancel()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _root_cause(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, e.g. from a TaskGroup."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        real = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (real or list(exc.exceptions))[0]
    return exc


def _describe(exc: BaseException) -> tuple[Exit, str, str] | None:
    """Exit code, error code and message of an expected failure; None for a bug."""
    import httpx

    if isinstance(exc, CliFailure):
        return exc.exit_code, exc.code, exc.message
    if isinstance(exc, EmsgError):
        return exit_for(exc), error_name(exc), exc.message
    if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError | socket.gaierror):
        detail = str(exc) or type(exc).__name__
        return Exit.NETWORK, "network", f"cannot reach the homeserver: {detail}"
    if isinstance(exc, httpx.HTTPError):
        return Exit.ERROR, "http", str(exc) or type(exc).__name__
    if type(exc).__module__.startswith("websockets"):
        return Exit.NETWORK, "network", f"the stream to the homeserver broke: {exc}"
    if isinstance(exc, OSError):  # the profile folder: permissions, a full disk, ...
        return Exit.ERROR, "os_error", str(exc)
    if isinstance(exc, sqlite3.OperationalError):  # locked for too long, an I/O error
        return Exit.ERROR, "profile_unavailable", f"the profile database cannot be used: {exc}"
    if isinstance(exc, sqlite3.DatabaseError):
        return (
            Exit.ERROR,
            "profile_damaged",
            f"the profile database is damaged ({exc}): restore the profile folder from a"
            " backup, or log in again in a new folder (`emsg account login`)",
        )
    return None


def _quiet_stdout() -> None:
    """After a broken pipe (`emsg messages | head`), send what is left nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def guarded(command: Callable[P, T]) -> Callable[P, T]:
    """Turn expected failures into one line on stderr and a documented exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(Exit.INTERRUPTED) from None
        except BrokenPipeError:
            _quiet_stdout()
            raise typer.Exit(Exit.ERROR) from None
        except Exception as raised:
            exc = _root_cause(raised)
            described = _describe(exc)
            if described is None:
                if os.environ.get(DEBUG_ENV):
                    raise
                described = (
                    Exit.ERROR,
                    "internal",
                    f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for details)",
                )
            exit_code, code, message = described
            error_line(code, message)
            raise typer.Exit(exit_code) from None

    return run
