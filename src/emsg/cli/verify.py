"""`emsg verify ADDRESS`: check a friend's account identity key out of band."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from emsg.cli.context import CliFailure, parse_address, with_client
from emsg.cli.exits import Exit
from emsg.cli.output import note, print_json, qr_code, say

if TYPE_CHECKING:
    from emsg.client import Client, ShortCode


def _ask(question: str) -> bool:
    """Yes or no from the terminal, or from the next line of piped stdin."""
    if sys.stdin.isatty():
        return bool(typer.confirm(question, default=False, err=True))
    note(question + " [y/N]")
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def verify(
    ctx: typer.Context,
    address: str = typer.Argument(
        ..., help="The friend to verify.", metavar="ADDRESS", show_default=False
    ),
    qr: bool = typer.Option(False, "--qr", help="Show a QR code for them to scan or paste."),
    scan: str | None = typer.Option(
        None, "--scan", metavar="CODE", help="Verify with the code their `--qr` shows (pasted)."
    ),
    sas: bool = typer.Option(
        False, "--sas", help="Interactive: both run `--sas` at once and compare emoji."
    ),
    confirm: bool = typer.Option(
        False, "--confirm", help="The safety numbers matched: mark them verified without asking."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Compare the safety number with ADDRESS (read it out, or meet), show or scan a QR
    code, or run an interactive SAS verification. A verified friend is marked as such
    in every listing, and a change of their key stops sending until you accept it."""
    peer = parse_address(address)
    if sum((qr, scan is not None, sas)) > 1:
        raise CliFailure(Exit.USAGE, "usage", "choose one of --qr, --scan and --sas")

    async def run(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {"address": peer}
        if scan is not None:
            await client.verify.scan(peer, scan)
        elif sas:
            await client.verify.sas(peer, _compare, client.fetch)
        elif qr:
            out["qr"] = await client.verify.qr_payload(peer)
        else:
            out["safety_number"] = number = await client.verify.safety_number(peer)
            if not as_json:
                say(f"safety number with [bold]{escape(peer)}[/]:")
                say(f"[bold]{number}[/]")
            if confirm or (not as_json and _ask(f"Does {peer} see the same number?")):
                await client.verify.confirm(peer)
        info = next((c for c in await client.contacts() if c.address == peer), None)
        out["verified"] = bool(info and info.verified)
        return out

    result = with_client(ctx, run)
    if as_json:
        print_json(result)
        return
    if "qr" in result:
        qr_code(result["qr"], always=True)
        say(f"or paste: [bold]{escape(result['qr'])}[/]")
        say("they run: emsg verify YOUR-ADDRESS --scan CODE")
        return
    if result["verified"]:
        say(f"[green]{escape(peer)} is verified[/]")
    else:
        say(f"{escape(peer)} is [yellow]not verified[/]")


async def _compare(code: ShortCode) -> bool:
    say("compare with your friend's screen:")
    say(code.emoji_text())
    say(f"or the numbers: [bold]{code.decimal_text()}[/]")
    return await asyncio.to_thread(_ask, "Do they match?")
