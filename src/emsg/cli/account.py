"""`emsg account`: register, log in, who am I, log out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from emsg.cli.context import guarded, parse_address, state, with_client, with_new_session
from emsg.cli.output import print_json, say

if TYPE_CHECKING:
    from emsg.client import Client

account_app = typer.Typer(
    help="Create an account, log this device in or out, show who you are.",
    no_args_is_help=True,
)

ADDRESS_HELP = "Your address, like alice#example.org."
SERVER_HELP = "Homeserver URL, e.g. https://im.example.org (default: discovered from the domain)."


async def _identity(client: Client) -> dict[str, str]:
    return {
        "address": str(client.address),
        "device_id": client.device_id,
        "server": client.server_url,
    }


def _welcome(ctx: typer.Context, verb: str, who: dict[str, str]) -> None:
    say(
        f"[green]{verb}[/] [bold]{escape(who['address'])}[/] on {escape(who['server'])}"
        f" (device {escape(who['device_id'])}, profile in {escape(str(state(ctx).home))})"
    )


@account_app.command()
@guarded
def register(
    ctx: typer.Context,
    address: str = typer.Argument(..., help=ADDRESS_HELP, metavar="ADDRESS", show_default=False),
    server: str | None = typer.Option(None, "--server", metavar="URL", help=SERVER_HELP),
) -> None:
    """Create ADDRESS on its homeserver and make this folder its first device.

    The password comes from EMSG_PASSWORD, or is asked for twice.
    """
    canonical = parse_address(address)
    who = with_new_session(ctx, "register", canonical, server, _identity)
    _welcome(ctx, "registered", who)


@account_app.command()
@guarded
def login(
    ctx: typer.Context,
    address: str = typer.Argument(..., help=ADDRESS_HELP, metavar="ADDRESS", show_default=False),
    server: str | None = typer.Option(None, "--server", metavar="URL", help=SERVER_HELP),
) -> None:
    """Log in to ADDRESS as a new device kept in this folder.

    The password comes from EMSG_PASSWORD, or is asked for.
    """
    canonical = parse_address(address)
    who = with_new_session(ctx, "login", canonical, server, _identity)
    _welcome(ctx, "logged in as", who)


@account_app.command()
@guarded
def whoami(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the address, device and homeserver of this profile (asks the server)."""

    async def ask(client: Client) -> dict[str, str]:
        return {**(await _identity(client)), **(await client.whoami())}

    who = with_client(ctx, ask)
    if as_json:
        print_json(who)
        return
    say(
        f"[bold]{escape(who['address'])}[/]  device {escape(who['device_id'])}"
        f"  on {escape(who['server'])}"
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
