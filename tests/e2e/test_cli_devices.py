"""Several devices of one account and friend verification, through the real `emsg`
command against a real homeserver process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from test_cli_story import (
    ALICE,
    AUTH,
    BOB,
    PASSWORD,
    REFUSED,
    _argv,
    _env,
    one_error_line,
    run,
    run_json,
)

from emsg.testing import ServerProcess

USAGE = 2


def test_second_device_is_approved_with_its_code_and_gets_everything(
    server: ServerProcess, tmp_path: Path
) -> None:
    a1, a2, b = tmp_path / "alice1", tmp_path / "alice2", tmp_path / "bob"
    run(a1, "account", "register", ALICE, "--server", server.url)
    run(b, "account", "register", BOB, "--server", server.url)
    run(a1, "contact", "add", BOB)
    run(b, "contact", "accept", ALICE)
    run(b, "send", ALICE, "before the second device")

    pending = json.loads(
        run(a2, "account", "login", ALICE, "--server", server.url, "--json").stdout
    )
    assert pending["state"] == "pending"
    assert pending["device_id"]
    code = pending["approval_code"]
    assert len(code) == 19
    human = run(a2, "account", "whoami").stdout
    assert "pending" in human

    refused = run(a2, "send", BOB, "too early", ok=False)
    assert refused.returncode == REFUSED
    one_error_line(refused, "device_not_approved")
    bad = run(a1, "device", "approve", "nonsense", ok=False)
    assert bad.returncode == USAGE
    one_error_line(bad, "invalid_approval_code")

    listed = {d["device_id"]: d["state"] for d in run_json(a2, "device", "list")}
    assert listed[pending["device_id"]] == "pending"
    out = run(a1, "device", "approve", code, "--history").stdout
    assert pending["device_id"] in out
    states = {d["device_id"]: d for d in run_json(a2, "device", "list")}
    assert states[pending["device_id"]]["state"] == "approved"
    assert states[pending["device_id"]]["current"] is True
    assert {d["state"] for d in states.values()} == {"approved"}
    history = run_json(a2, "messages")
    assert [m["body"] for m in history] == ["before the second device"]

    # fan-out to both devices, self-sync from the second one
    run(b, "send", ALICE, "to both")
    for home in (a1, a2):
        assert run_json(home, "messages")[-1]["body"] == "to both"
    run(a2, "send", BOB, "from the second device")
    mine = run_json(a1, "messages", "--with", BOB)[-1]
    assert (mine["body"], mine["direction"], mine["from"]) == (
        "from the second device",
        "out",
        ALICE,
    )
    assert run_json(b, "messages")[-1]["body"] == "from the second device"


def test_verify_with_safety_number_and_qr(server: ServerProcess, tmp_path: Path) -> None:
    a, b = tmp_path / "alice", tmp_path / "bob"
    run(a, "account", "register", ALICE, "--server", server.url)
    run(b, "account", "register", BOB, "--server", server.url)
    run(a, "contact", "add", BOB)
    run(b, "contact", "accept", ALICE)
    contacts = run_json(a, "contact", "list")
    assert [(c["address"], c["verified"], c["verification"]) for c in contacts] == [
        (BOB, False, "unverified")
    ]

    seen_by_alice = run_json(a, "verify", BOB)
    seen_by_bob = run_json(b, "verify", ALICE, "--confirm")
    assert seen_by_alice["safety_number"] == seen_by_bob["safety_number"]
    assert len(seen_by_alice["safety_number"].replace(" ", "")) == 60
    assert seen_by_alice["verified"] is False
    assert seen_by_bob["verified"] is True

    qr = run_json(b, "verify", ALICE, "--qr")["qr"]
    assert qr.startswith("emsg-verify:1:")
    assert "is verified" in run(a, "verify", BOB, "--scan", qr).stdout
    assert run_json(a, "contact", "list")[0]["verification"] == "verified"
    human = run(a, "contact", "list").stdout
    assert "yes" in human

    wrong = run(a, "verify", BOB, "--scan", qr[:-6] + "AAAAAA", ok=False)
    assert wrong.returncode == REFUSED
    one_error_line(wrong, "verification_failed")


def test_revoke_a_device_and_recover_with_a_new_recovery_key(
    server: ServerProcess, tmp_path: Path
) -> None:
    a1, a2, a3, b = (tmp_path / n for n in ("alice1", "alice2", "alice3", "bob"))
    registered = run(a1, "account", "register", ALICE, "--server", server.url).stdout
    assert "recovery key:" in registered
    assert "shown only now" in registered
    run(b, "account", "register", BOB, "--server", server.url)
    run(a1, "contact", "add", BOB)
    run(b, "contact", "accept", ALICE)
    code = run_json(a2, "account", "login", ALICE, "--server", server.url)["approval_code"]
    run(a1, "device", "approve", code)
    second = run_json(a2, "account", "whoami")["device_id"]

    # Revoke the second device from the first: wrong password first, then the right one.
    wrong = run(a1, "device", "revoke", second, ok=False, password="not the password")
    assert wrong.returncode == AUTH
    out = run(a1, "device", "revoke", second).stdout
    assert f"revoked device {second}" in out
    states = {d["device_id"]: d["state"] for d in run_json(a1, "device", "list")}
    assert states[second] == "revoked"
    refused = run(a2, "account", "whoami", ok=False)
    assert refused.returncode == AUTH
    one_error_line(refused, "unauthorized")
    run(b, "send", ALICE, "after the revocation")
    assert run_json(a1, "messages")[-1]["body"] == "after the revocation"

    # A new recovery key (shown once), then a third device approves itself with it.
    key = run_json(a1, "account", "recovery-key")["recovery_key"]
    assert len(key.replace("-", "").replace(" ", "")) == 32
    human = run(a1, "account", "recovery-key").stdout  # the key above stops working
    assert "shown only now" in human
    newest = human.split("recovery key:")[1].split()[0]
    pending = run_json(a3, "account", "login", ALICE, "--server", server.url)
    assert pending["state"] == "pending"

    def recover(recovery_key: str) -> subprocess.CompletedProcess[str]:
        env = {**_env(PASSWORD), "EMSG_RECOVERY_KEY": recovery_key}
        return subprocess.run(
            _argv(a3, "account", "recover"), env=env, capture_output=True, text=True,
            timeout=120, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip

    stale = recover(key)
    assert stale.returncode == AUTH, stale.stderr
    one_error_line(stale, "invalid_recovery_key")
    done = recover(newest)
    assert done.returncode == 0, done.stderr
    assert "is approved" in done.stdout
    assert run_json(a3, "account", "whoami")["state"] == "approved"
    run(b, "send", ALICE, "to the recovered device")
    assert run_json(a3, "messages")[-1]["body"] == "to the recovered device"


def test_a_wrong_key_at_login_recover_says_what_to_do_and_leaves_no_device_behind(
    server: ServerProcess, tmp_path: Path
) -> None:
    a1, a2 = tmp_path / "alice1", tmp_path / "alice2"
    key = run_json(a1, "account", "register", ALICE, "--server", server.url)["recovery_key"]

    def login_recover(recovery_key: str) -> subprocess.CompletedProcess[str]:
        env = {**_env(PASSWORD), "EMSG_RECOVERY_KEY": recovery_key}
        argv = _argv(a2, "account", "login", ALICE, "--server", server.url, "--recover")
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip

    wrong = login_recover("A" * 32)
    assert wrong.returncode == AUTH, wrong.stderr
    one_error_line(wrong, "invalid_recovery_key")
    assert "run `emsg account recover` here with the right key" in wrong.stderr
    # Logging in again in that folder (instead of `account recover`) goes on with
    # the device the first attempt made, rather than leaving it pending for good.
    pending = run_json(a2, "account", "whoami")["device_id"]
    assert login_recover(key).returncode == 0
    assert run_json(a2, "account", "whoami")["device_id"] == pending
    states = sorted(d["state"] for d in run_json(a1, "device", "list"))
    assert states == ["approved", "approved"]
