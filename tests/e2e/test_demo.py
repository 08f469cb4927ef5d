"""`scripts/demo`, the README's documented demo, run as a person would run it: it
starts its own homeserver and tells the whole friend-and-chat story with the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

from test_cli_story import _env

from emsg.testing import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_demo_runs_the_story_and_leaves_no_clear_text() -> None:
    env = {**_env(password=None), "EMSG_DEMO_PORT": str(free_port())}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # Each side reads what the other wrote, decrypted from the server's ciphertext.
    assert out.count("Hello Bob, this is end-to-end encrypted.") >= 2, out
    assert "Hi Alice! Only we can read this." in out, out
    assert out.rstrip().endswith("the server's data folder holds no message text"), out
