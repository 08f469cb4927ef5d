"""`emsg device`: list this account's devices, approve a new one, revoke one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from emsg.cli.context import guarded, with_client, with_client_and_password
from emsg.cli.output import note, print_json, say, table, when

if TYPE_CHECKING:
    from emsg.client import Client, DeviceInfo

device_app = typer.Typer(
    help="The devices of your account: list, approve a new one, revoke one.",
    no_args_is_help=True,
)


@device_app.command("list")
@guarded
def list_(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
) -> None:
    """Every device of this account: approved (in the signed device list), pending, revoked."""

    async def read(client: Client) -> list[DeviceInfo]:
        await client.check_approval()
        return await client.devices()

    devices = with_client(ctx, read)
    if as_json:
        print_json([d.to_json() for d in devices])
        return
    table(
        "Devices",
        ("device", "state", "this one", "since"),
        ((d.device_id, d.state, "yes" if d.current else "", when(d.created_at)) for d in devices),
    )


@device_app.command("approve")
@guarded
def approve(
    ctx: typer.Context,
    code: str = typer.Argument(
        ..., help="The approval code the new device shows.", metavar="CODE", show_default=False
    ),
    history: bool = typer.Option(
        False, "--history", help="Also copy this device's message history to it (encrypted)."
    ),
) -> None:
    """Approve the new device that shows CODE: it joins the signed device list and
    receives the account identity key, end-to-end encrypted."""
    info = with_client(ctx, lambda client: client.approve_device(code, history=history))
    say(f"[green]approved device [bold]{escape(info.device_id)}[/bold][/]")
    if history:
        note("the message history was sent to it")


@device_app.command("revoke")
@guarded
def revoke(
    ctx: typer.Context,
    device_id: str = typer.Argument(
        ...,
        help="The device to revoke (see `emsg device list`).",
        metavar="DEVICE_ID",
        show_default=False,
    ),
) -> None:
    """Revoke DEVICE_ID: its session ends at once, it leaves the signed device list and
    nobody encrypts to it any more. Needs the account password."""
    with_client_and_password(
        ctx, lambda client, password: client.revoke_device(device_id, password)
    )
    say(f"revoked device [bold]{escape(device_id)}[/]")
