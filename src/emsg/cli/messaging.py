"""`emsg send`, `emsg messages`, `emsg listen`: writing and reading messages."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from emsg.cli.context import CliFailure, guarded, parse_address, until_terminated, with_client
from emsg.cli.exits import Exit
from emsg.cli.output import json_line, note, print_json, say, table, when

if TYPE_CHECKING:
    from emsg.client import Client, ClientEvent, Message

JSON_HELP = "Print JSON for scripts."


def _body(text: str) -> str:
    """TEXT itself, or stdin for "-" (then the password must come from EMSG_PASSWORD)."""
    body = sys.stdin.read().removesuffix("\n") if text == "-" else text
    if not body.strip():
        raise CliFailure(Exit.USAGE, "empty_message", "the message is empty")
    return body


def send(
    ctx: typer.Context,
    address: str = typer.Argument(
        ..., help="The recipient, like bob#example.org.", metavar="ADDRESS", show_default=False
    ),
    text: str = typer.Argument(
        ..., help='The message; "-" reads it from stdin.', metavar="TEXT", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the sent message as JSON."),
) -> None:
    """Send TEXT to ADDRESS, end-to-end encrypted.

    Exits 0 only once the homeserver has durably accepted the message.
    """
    to = parse_address(address)
    body = _body(text)
    sent = with_client(ctx, lambda client: client.send_text(to, body))
    if as_json:
        print_json(sent.to_json())
    else:
        say(f"sent to [bold]{escape(to)}[/] [dim]({escape(str(sent.id))})[/]")


def messages(
    ctx: typer.Context,
    with_: str | None = typer.Option(
        None, "--with", metavar="ADDRESS", help="Only the conversation with ADDRESS."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print ONE JSON array of {id, from, to, body, sent_at, ...}."
    ),
    fetch: bool = typer.Option(
        True, "--fetch/--no-fetch", help="Fetch pending messages first (--no-fetch: offline)."
    ),
) -> None:
    """Fetch and decrypt what is pending, store it locally, and print the history."""
    peer = parse_address(with_) if with_ is not None else None

    async def read(client: Client) -> list[Message]:
        if fetch:
            await client.fetch()
        return client.history(peer)

    history = with_client(ctx, read)
    if as_json:
        print_json([message.to_json() for message in history])
        return
    if not history:
        say("no messages" + (f" with {escape(peer)}" if peer else ""))
        return
    table(
        f"Messages with {peer}" if peer else "Messages",
        ("sent", "from", "to", "message"),
        ((when(m.sent_at), m.sender, m.recipient, _shown_body(m)) for m in history),
    )


def _shown_body(message: Message) -> str:
    if message.bounced is not None:
        return f"{message.body}  [NOT DELIVERED: {message.bounced}]"
    if message.pending:
        return f"{message.body}  [not confirmed yet: sent again by your next command]"
    return message.body


def _event_json(event: ClientEvent) -> dict[str, Any]:
    if event.message is not None:
        detail = {"detail": event.detail} if event.detail else {}
        return {"kind": event.kind, **event.message.to_json(), **detail}
    if event.contact is not None:
        return {"kind": event.kind, **event.contact.to_json()}
    return {"kind": event.kind, "detail": event.detail}


def _event_line(event: ClientEvent) -> str:
    if event.kind == "bounce":
        if event.message is None:
            return f"[bold red]not delivered:[/] {escape(event.detail)}"
        m = event.message
        return (
            f"[bold red]not delivered to {escape(m.recipient)}:[/] {escape(m.body)}"
            f" ({escape(event.detail)})"
        )
    if event.message is not None:
        m = event.message
        return f"[dim]{when(m.sent_at)}[/] [bold]{escape(str(m.sender))}[/]: {escape(m.body)}"
    contact = event.contact
    who = escape(str(contact.address)) if contact is not None else "someone"
    if event.kind == "contact_request":
        said = f": {escape(contact.message)}" if contact is not None and contact.message else ""
        return f"[yellow]{who} wants to be your contact{said}[/] (emsg contact accept {who})"
    if event.kind == "contact_accepted":
        return f"[green]{who} accepted: you are now contacts[/]"
    if event.kind == "contact_declined":
        return f"{who} declined your contact request"
    if event.kind == "key_changed":
        return (
            f"[bold red]WARNING: the identity key of {who} has changed;[/] nothing is sent to"
            f" them until you verify (emsg verify {who}) and accept it (emsg contact trust {who})"
        )
    if event.kind == "approved":
        return f"[green]this device was approved by device {escape(event.detail)}[/]"
    if event.kind == "history":
        return f"{escape(event.detail)} message(s) of history arrived from another device"
    return f"{event.kind} {who}"


def listen(
    ctx: typer.Context,
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per line, each with a `kind`, flushed at once."
    ),
) -> None:
    """Print messages and contact events as they arrive, until Ctrl-C or SIGTERM."""

    async def follow(client: Client) -> None:
        note(f"listening as {escape(str(client.address))} (Ctrl-C to stop)")
        async for event in client.listen():
            if as_json:
                json_line(_event_json(event))
            else:
                say(_event_line(event))

    # The client's notices of a homeserver it cannot reach, and of reaching it again,
    # as status lines: a listener must not wait in silence while it hears nothing.
    status = _StatusLines()
    client_log = logging.getLogger("emsg.client.client")
    client_log.addHandler(status)
    level = client_log.level
    client_log.setLevel(logging.INFO)
    try:
        with_client(ctx, lambda client: until_terminated(follow(client)))
    finally:
        client_log.removeHandler(status)
        client_log.setLevel(level)


class _StatusLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        note(escape(record.getMessage()))


def register(app: typer.Typer) -> None:
    """These commands sit at the top level: `emsg send`, `emsg messages`, `emsg listen`."""
    app.command("send")(guarded(send))
    app.command("messages")(guarded(messages))
    app.command("listen")(guarded(listen))
