"""The root `emsg` command: the global `--home` option and every client command group.

`emsg.__main__` adds the homeserver's `server` group beside these.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from emsg.cli import messaging
from emsg.cli.account import account_app
from emsg.cli.contact import contact_app
from emsg.cli.context import DEBUG_ENV, HOME_ENV, CliState, guarded, resolve_home
from emsg.cli.device import device_app
from emsg.cli.exits import epilog
from emsg.cli.policy import policy_app
from emsg.cli.verify import verify

app = typer.Typer(
    name="emsg",
    help=(
        "EMSG: federated, end-to-end encrypted messaging that works like e-mail.\n\n"
        "Every command uses the profile folder of --home (or EMSG_HOME, default ~/.emsg);"
        " passwords come from EMSG_PASSWORD or a hidden prompt, never from an argument."
    ),
    epilog=epilog(),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,  # guarded() prints expected errors; never dump locals
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None,
        "--home",
        envvar=HOME_ENV,
        metavar="DIR",
        file_okay=False,
        show_default="~/.emsg",
        help="Profile folder (keys, contacts, history) of the account to use.",
    ),
) -> None:
    if os.environ.get(DEBUG_ENV):
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    ctx.obj = CliState(home=resolve_home(home))


app.add_typer(account_app, name="account")
app.add_typer(contact_app, name="contact")
app.add_typer(device_app, name="device")
app.add_typer(policy_app, name="policy")
messaging.register(app)
app.command("verify")(guarded(verify))
