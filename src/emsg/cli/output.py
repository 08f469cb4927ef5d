"""Everything the CLI prints: rich for people on stdout, JSON for scripts, one-line errors.

Consoles are made per call: rich then writes to whatever `sys.stdout`/`sys.stderr` is at
that moment (a pipe, a terminal, a test runner's buffer).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def stdout() -> Console:
    return Console(highlight=False, emoji=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


# What other people wrote (a message, a contact request, a bounce reason, a server's
# error) reaches the terminal: it must not be able to drive it. C0 and C1 controls but
# newline and tab (escape sequences clear the screen, retitle the window, write the
# clipboard, fake a line), and the bidirectional overrides and isolates, which reorder
# what is shown around them ("Trojan Source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every character that could drive a terminal shown as an escape."""
    return _UNSAFE.sub(_visible, text)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def say(text: str) -> None:
    """One line for people (rich markup allowed; escape what users typed)."""
    stdout().print(printable(text), soft_wrap=True)


def note(text: str) -> None:
    """Status for people that must not mix into stdout (which scripts may parse)."""
    stderr().print(printable(text), style="dim")


def error_line(code: str, message: str) -> None:
    """The single line every failure prints: `error: CODE: MESSAGE`."""
    flat = printable(" ".join(message.split()))
    line = Text.assemble(("error", "bold red"), f": {code}: {flat}")
    stderr().print(line, markup=False)


def _dumps(data: Any, **how: Any) -> str:
    # Inside a JSON string any character may be a \u escape: the same value for a
    # script, nothing for a terminal to act on when the output is shown.
    return _UNSAFE.sub(_json_escaped, json.dumps(data, ensure_ascii=False, **how))


def print_json(data: Any) -> None:
    """One JSON document (an object or an array), for scripts."""
    sys.stdout.write(_dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def json_line(data: Any) -> None:
    """One compact JSON object on one line, flushed at once (for live streams)."""
    sys.stdout.write(_dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# Only free text may wrap; an address, a time or a state broken over two lines
# reads as something else (`alice#example.tes` / `t`).
WRAPPING_COLUMNS = frozenset({"message", "body"})


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold", expand=False)
    for column in columns:
        wraps = column in WRAPPING_COLUMNS
        grid.add_column(column, overflow="fold", no_wrap=not wraps, ratio=1 if wraps else None)
    for row in rows:
        grid.add_row(*(Text(printable(str(cell))) for cell in row))  # never markup
    stdout().print(grid)


def when(ms: int | None) -> str:
    """A Unix time in milliseconds as local time, the way people read it."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M")


def qr_code(payload: str, *, always: bool = False) -> None:
    """A QR code of `payload` in the terminal (segno); unless `always`, only on a terminal."""
    if not always and not sys.stdout.isatty():
        return
    import segno

    segno.make(payload, error="m").terminal(out=sys.stdout, compact=True)
