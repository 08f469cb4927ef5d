"""`emsg contact`: friend requests, the contact list, blocking."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from emsg.cli.context import guarded, parse_address, with_client
from emsg.cli.output import print_json, say, table, when

if TYPE_CHECKING:
    from emsg.client import Client, ContactInfo

contact_app = typer.Typer(
    help="Ask people to be your contacts, answer requests, list and block.",
    no_args_is_help=True,
)

ADDRESS = typer.Argument(
    ..., help="Their address, like bob#example.org.", metavar="ADDRESS", show_default=False
)
JSON = typer.Option(False, "--json", help="Print one JSON array instead of a table.")

_REQUEST_KIND = {
    "incoming": "wants to be your contact",
    "outgoing": "you asked, waiting",
    "message_request": "stranger's messages held",
}


@contact_app.command("add")
@guarded
def add(
    ctx: typer.Context,
    address: str = ADDRESS,
    message: str = typer.Option("", "--message", "-m", help="A note sent with the request."),
) -> None:
    """Send ADDRESS a contact request (pins their identity key once they accept)."""
    to = parse_address(address)
    info = with_client(ctx, lambda client: client.add_contact(to, message))
    if info.state == "friend":
        say(f"[green]you and [bold]{escape(to)}[/bold] are now contacts[/]")
    else:
        say(f"contact request sent to [bold]{escape(to)}[/]")


@contact_app.command("requests")
@guarded
def requests(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List pending requests: incoming, outgoing, and strangers whose messages are held."""
    pending = with_client(ctx, lambda client: client.contact_requests())
    if as_json:
        print_json([info.to_json() for info in pending])
        return
    if not pending:
        say("no pending contact requests")
        return
    table(
        "Contact requests",
        ("address", "state", "message", "since"),
        (
            (info.address, _REQUEST_KIND.get(info.state, info.state), info.message or "",
             when(info.since))
            for info in pending
        ),
    )  # fmt: skip


@contact_app.command("accept")
@guarded
def accept(ctx: typer.Context, address: str = ADDRESS) -> None:
    """Accept ADDRESS's request: you become contacts and held messages are released."""
    peer = parse_address(address)
    with_client(ctx, lambda client: client.accept_contact(peer))
    say(f"[green]you and [bold]{escape(peer)}[/bold] are now contacts[/]")


@contact_app.command("decline")
@guarded
def decline(ctx: typer.Context, address: str = ADDRESS) -> None:
    """Decline ADDRESS's request (their held messages are discarded)."""
    peer = parse_address(address)
    with_client(ctx, lambda client: client.decline_contact(peer))
    say(f"declined the request from [bold]{escape(peer)}[/]")


async def _contacts_and_blocked(client: Client) -> tuple[list[ContactInfo], list[str]]:
    return await client.contacts(), await client.blocked()


def _blocked_json(address: str) -> dict[str, Any]:
    return {"address": address, "state": "blocked", "message": None, "identity_key": None,
            "verified": False, "verification": "unverified", "since": None}  # fmt: skip


_VERIFICATION = {"verified": "yes", "unverified": "no", "key_changed": "KEY CHANGED"}


def warn_key_changed(address: str) -> None:
    say(
        f"[bold red]WARNING: the identity key of {escape(address)} has changed.[/] Nothing is"
        f" sent to them until you compare safety numbers (`emsg verify {escape(address)}`)"
        f" and accept the new key (`emsg contact trust {escape(address)}`)."
    )


@contact_app.command("list")
@guarded
def list_(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List your contacts, then the addresses you block (state "blocked" in JSON)."""
    contacts, blocked = with_client(ctx, _contacts_and_blocked)
    if as_json:
        print_json([info.to_json() for info in contacts] + [_blocked_json(a) for a in blocked])
        return
    if not contacts:
        say("no contacts yet: `emsg contact add ADDRESS`")
    else:
        table(
            "Contacts",
            ("address", "state", "verified", "since"),
            (
                (info.address, info.state, _VERIFICATION[info.verification], when(info.since))
                for info in contacts
            ),
        )
        for info in contacts:
            if info.key_changed:
                warn_key_changed(info.address)
    if blocked:
        table("Blocked", ("address",), ((address,) for address in blocked))


@contact_app.command("block")
@guarded
def block(ctx: typer.Context, address: str = ADDRESS) -> None:
    """Block ADDRESS: their requests and messages are refused, held ones discarded."""
    peer = parse_address(address)
    with_client(ctx, lambda client: client.block(peer))
    say(f"blocked [bold]{escape(peer)}[/]")


@contact_app.command("unblock")
@guarded
def unblock(ctx: typer.Context, address: str = ADDRESS) -> None:
    """Unblock ADDRESS (they are strangers again, subject to your policy)."""
    peer = parse_address(address)
    with_client(ctx, lambda client: client.unblock(peer))
    say(f"unblocked [bold]{escape(peer)}[/]")


@contact_app.command("trust")
@guarded
def trust(ctx: typer.Context, address: str = ADDRESS) -> None:
    """Accept the new identity key ADDRESS shows after a key-change warning (they are
    then unverified until you verify them again)."""
    peer = parse_address(address)
    with_client(ctx, lambda client: client.verify.accept_new_key(peer))
    say(f"now trusting the new identity key of [bold]{escape(peer)}[/] (not verified)")
