"""Fixtures the CLI tests share: a homeserver process, and a proxy in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_story import DOMAIN

from emsg.testing import ServerProcess
from emsg.testing.proxy import FaultyProxy


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(domain=DOMAIN, data=tmp_path / "srv") as proc:
        yield proc


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[FaultyProxy]:
    """Between a client and `server`: loses sends on demand, keeps every request."""
    with FaultyProxy(server.port) as faulty:
        yield faulty
