"""`emsg account`: register, log in (and wait for approval), recover, who am I, log out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from emsg.cli.context import (
    RECOVERY_ENV,
    guarded,
    parse_address,
    read_secret,
    state,
    with_client,
    with_new_session,
)
from emsg.cli.output import print_json, qr_code, say
from emsg.crypto.errors import InvalidRecoveryKey

if TYPE_CHECKING:
    from emsg.client import Client

account_app = typer.Typer(
    help="Create an account, log this device in or out, show who you are.",
    no_args_is_help=True,
)

ADDRESS_HELP = "Your address, like alice#example.org."
SERVER_HELP = "Homeserver URL, e.g. https://im.example.org (default: discovered from the domain)."


async def _identity(client: Client) -> dict[str, Any]:
    return {
        "address": str(client.address),
        "device_id": client.device_id,
        "server": client.server_url,
        "state": "approved" if client.approved else "pending",
    }


def _welcome(ctx: typer.Context, verb: str, who: dict[str, Any]) -> None:
    say(
        f"[green]{verb}[/] [bold]{escape(who['address'])}[/] on {escape(who['server'])}"
        f" (device {escape(who['device_id'])}, profile in {escape(str(state(ctx).home))})"
    )


def show_recovery_key(key: str) -> None:
    say(f"[bold yellow]recovery key:[/] [bold]{escape(key)}[/]")
    say(
        "Write it down and keep it safe: it is shown only now. With it, a new device can"
        " join this account when no other device is at hand (`emsg account recover`)."
    )


def show_approval(code: str, device_id: str) -> None:
    say(f"[yellow]this device ({escape(device_id)}) is waiting for approval[/]")
    say(f"approval code: [bold]{escape(code)}[/]")
    say(
        "On a device of this account that is already approved, run"
        f" [bold]emsg device approve {escape(code)}[/] (add --history to copy your messages)"
        " or scan the code below; or run `emsg account recover` here with the recovery key."
    )
    qr_code(code)


@account_app.command()
@guarded
def register(
    ctx: typer.Context,
    address: str = typer.Argument(..., help=ADDRESS_HELP, metavar="ADDRESS", show_default=False),
    server: str | None = typer.Option(None, "--server", metavar="URL", help=SERVER_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Create ADDRESS on its homeserver and make this folder its first device.

    Prints the account recovery key once. The password comes from EMSG_PASSWORD, or
    is asked for twice.
    """
    canonical = parse_address(address)

    async def made(client: Client) -> dict[str, Any]:
        return {**(await _identity(client)), "recovery_key": client.recovery_key}

    who = with_new_session(ctx, "register", canonical, server, made)
    if as_json:
        print_json(who)
        return
    _welcome(ctx, "registered", who)
    if who["recovery_key"]:
        show_recovery_key(who["recovery_key"])


@account_app.command()
@guarded
def login(
    ctx: typer.Context,
    address: str = typer.Argument(..., help=ADDRESS_HELP, metavar="ADDRESS", show_default=False),
    server: str | None = typer.Option(None, "--server", metavar="URL", help=SERVER_HELP),
    recover: bool = typer.Option(
        False, "--recover", help=f"Approve this device with the recovery key ({RECOVERY_ENV})."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object (with device_id, state, approval_code)."
    ),
) -> None:
    """Log in to ADDRESS in this folder.

    A folder whose device the server still has logs that same device in
    again (commands do so by themselves when the session expires). Otherwise
    it becomes a new device, and a new folder's device waits for approval: it
    shows a code to enter on an approved device (`emsg device approve CODE`),
    or takes the recovery key (--recover). The password comes from
    EMSG_PASSWORD, or is asked for.
    """
    canonical = parse_address(address)
    recovery = read_secret(RECOVERY_ENV, "Recovery key", what="recovery key") if recover else None

    async def enter(client: Client) -> dict[str, Any]:
        if recovery is not None and not client.approved:
            try:
                await client.recover(recovery)
            except InvalidRecoveryKey as exc:
                raise InvalidRecoveryKey(
                    f"{exc.message}; this folder is logged in and its device waits for"
                    " approval: run `emsg account recover` here with the right key"
                ) from None
        return {**(await _identity(client)), "approval_code": client.approval_code}

    who = with_new_session(ctx, "login", canonical, server, enter)
    if as_json:
        print_json(who)
        return
    _welcome(ctx, "logged in as", who)
    if who["approval_code"]:
        show_approval(who["approval_code"], who["device_id"])


@account_app.command("recover")
@guarded
def recover_(ctx: typer.Context) -> None:
    """Approve this waiting device with the account recovery key (from EMSG_RECOVERY_KEY,
    a hidden prompt, or the line after the password on stdin)."""

    async def enter(client: Client) -> str:
        recovery = read_secret(RECOVERY_ENV, "Recovery key", what="recovery key")
        await client.recover(recovery)
        return client.device_id

    device_id = with_client(ctx, enter)
    say(f"[green]device {escape(device_id)} is approved[/]")


@account_app.command("recovery-key")
@guarded
def recovery_key(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Make a new recovery key (the old one stops working) and show it once."""
    key = with_client(ctx, lambda client: client.new_recovery_key())
    if as_json:
        print_json({"recovery_key": key})
        return
    show_recovery_key(key)


@account_app.command()
@guarded
def whoami(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the address, device and homeserver of this profile (asks the server)."""

    async def ask(client: Client) -> dict[str, Any]:
        await client.check_approval()
        return {**(await _identity(client)), **(await client.whoami())}

    who = with_client(ctx, ask)
    if as_json:
        print_json(who)
        return
    say(
        f"[bold]{escape(who['address'])}[/]  device {escape(who['device_id'])}"
        f"  on {escape(who['server'])}  ({who['state']})"
    )


@account_app.command()
@guarded
def logout(ctx: typer.Context) -> None:
    """End this device's session on the server (the token stops working at once)."""

    async def leave(client: Client) -> str:
        await client.logout()
        return str(client.address)

    address = with_client(ctx, leave)
    say(f"logged out [bold]{escape(address)}[/]")
