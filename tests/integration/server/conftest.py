from __future__ import annotations

import sys
from pathlib import Path

# The project is not installed in this environment: make `src` importable here and
# (through PYTHONPATH, see server_kit.SRC) in server processes.
_SRC = str(Path(__file__).resolve().parents[3] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from collections.abc import AsyncIterator  # noqa: E402 - after the sys.path fix above

import httpx  # noqa: E402 - after the sys.path fix above
import pytest  # noqa: E402 - after the sys.path fix above
from server_kit import make_settings, running  # noqa: E402 - after the sys.path fix above


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running(make_settings(tmp_path)) as c:
        yield c
