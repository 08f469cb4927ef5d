"""The `emsg` command: the client CLI with the homeserver's `server` group beside it.

This module is the one place that joins the front end and the server; neither
imports the other (import-linter keeps it so).
"""

from __future__ import annotations

from emsg.cli.app import app
from emsg.server.cli import server_app

app.add_typer(server_app, name="server", help="Run and manage a homeserver.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
