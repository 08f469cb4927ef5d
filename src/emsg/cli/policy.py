"""`emsg policy`: who may write to you without being a contact."""

from __future__ import annotations

import typer

from emsg.cli.context import guarded, with_client
from emsg.cli.output import print_json, say
from emsg.proto.wire import StrangerPolicy

policy_app = typer.Typer(
    help="Decide what happens to messages from strangers.", no_args_is_help=True
)

_MEANING = {
    StrangerPolicy.OPEN: "strangers' messages are delivered like a contact's",
    StrangerPolicy.REQUESTS: "strangers' messages are held until you accept them as contacts",
    StrangerPolicy.CONTACTS_ONLY: "strangers' messages are refused",
}


@policy_app.command()
@guarded
def strangers(
    ctx: typer.Context,
    policy: StrangerPolicy | None = typer.Argument(
        None,
        help="The new policy; without it, print the current one.",
        metavar="POLICY",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help='Print {"strangers": POLICY}.'),
) -> None:
    """Show or set your stranger policy: open, requests or contacts-only."""
    if policy is None:
        current = with_client(ctx, lambda client: client.get_stranger_policy())
    else:
        current = with_client(ctx, lambda client: client.set_stranger_policy(policy.value))
    value = StrangerPolicy(str(getattr(current, "value", current)))
    if as_json:
        print_json({"strangers": value.value})
        return
    say(f"strangers: [bold]{value.value}[/] ({_MEANING[value]})")
