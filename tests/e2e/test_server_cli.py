"""`emsg server run` refuses what it cannot serve with one line and an exit code,
before it starts anything: the real command, as an operator would run it."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from emsg.testing import ServerProcess, free_port

DOMAIN = "example.test"


def server_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emsg", "server", "run", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("listen", "line"),
    [
        ("nonsense", "error: invalid settings: listen: must be HOST:PORT with a port from"
                     " 1 to 65535, not 'nonsense'"),
        ("127.0.0.1:99999", "error: invalid settings: listen: must be HOST:PORT with a port"
                            " from 1 to 65535, not '127.0.0.1:99999'"),
        ("127.0.0.1:0", "error: invalid settings: listen: must be HOST:PORT with a port from"
                        " 1 to 65535, not '127.0.0.1:0'"),
    ],
)  # fmt: skip
def test_a_listen_address_that_is_no_port_is_exit_2(tmp_path: Path, listen: str, line: str) -> None:
    done = server_run("--domain", DOMAIN, "--listen", listen, "--data", str(tmp_path / "d"))
    assert done.returncode == 2
    assert one_line(done) == line
    assert not (tmp_path / "d").exists()


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        done = server_run("--domain", DOMAIN, "--listen", f"127.0.0.1:{port}",
                          "--data", str(tmp_path / "d"))  # fmt: skip
    assert done.returncode == 1
    assert one_line(done) == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not (tmp_path / "d" / "emsg.sqlite3").exists()


def test_a_data_folder_that_cannot_be_made_is_one_line_and_exit_1(tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    data = in_the_way / "data"
    done = server_run("--domain", DOMAIN, "--listen", f"127.0.0.1:{free_port()}",
                      "--data", str(data))  # fmt: skip
    assert done.returncode == 1
    assert one_line(done) == f"error: cannot use the data folder {data}: Not a directory"


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        ('domain = "example.test"\nlsiten = "127.0.0.1:1"\n',
         "error: invalid settings: lsiten: Extra inputs are not permitted"),
        ('domain = "example.test"\ndatabase_url = 5\n',
         "error: invalid settings: database_url: Input should be a valid string"),
        ("domain = \n", "is not valid TOML: Invalid value (at line 1, column 10)"),
    ],
)  # fmt: skip
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path: Path, toml: str, line: str) -> None:
    config = tmp_path / "server.toml"
    config.write_text(toml)
    done = server_run("--config", str(config), "--data", str(tmp_path / "d"))
    assert done.returncode == 2
    assert one_line(done).endswith(line)


def test_the_settings_error_never_shows_a_database_password(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('domain = "example.test"\ndatabase_url = "postgresql://u:Sq7pw@h/db"\n'
                      "allow_port_in_domain = 'maybe'\n")  # fmt: skip
    done = server_run("--config", str(config), "--data", str(tmp_path / "d"))
    assert done.returncode == 2
    assert "allow_port_in_domain" in one_line(done)
    assert "Sq7pw" not in done.stderr + done.stdout


def test_it_serves_on_the_socket_it_bound_and_stops_with_0(tmp_path: Path) -> None:
    server = ServerProcess(DOMAIN, tmp_path / "srv").start()
    try:
        assert f"listening on http://127.0.0.1:{server.port}" in server.log()
        probe = httpx.head(f"{server.url}/_emsg/v1/health")  # as load balancers ask
        assert (probe.status_code, probe.content) == (200, b"")
    finally:
        code = server.stop()
    assert code == 0


def test_what_it_keeps_only_its_own_user_can_read(tmp_path: Path) -> None:
    """Password hashes, token hashes and identity backups are in the database: the
    data folder it makes, and every file in it, are the server user's alone, even
    under the usual umask 022."""
    data, port = tmp_path / "srv", free_port()
    previous = os.umask(0o022)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emsg", "server", "run", "--domain", DOMAIN,
             "--listen", f"127.0.0.1:{port}", "--data", str(data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        os.umask(previous)
    try:
        url = f"http://127.0.0.1:{port}/_emsg/v1"
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            time.sleep(0.05)
        alice = {"address": f"alice#{DOMAIN}", "password": "a long password"}
        created = httpx.post(f"{url}/accounts", json=alice)
        assert created.status_code == 201, created.text
        modes = {str(p.relative_to(data)): stat.S_IMODE(p.stat().st_mode) for p in data.rglob("*")}
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert {"emsg.sqlite3", "emsg.sqlite3-wal", "emsg.sqlite3-shm"} <= modes.keys()
    assert {name: mode for name, mode in modes.items() if mode & 0o077} == {}


def rotate_key(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emsg", "server", "rotate-key", "--data", str(data)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_rotate_key_starts_a_key_the_restarted_server_publishes(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    with ServerProcess(DOMAIN, data) as server:
        before = httpx.get(f"{server.url}/_emsg/v1/federation/keys").json()
    done = rotate_key(data)
    assert done.returncode == 0, done.stderr
    found = re.fullmatch(r"new signing key (\S+); restart the server to use it\n", done.stdout)
    assert found is not None, done.stdout
    with ServerProcess(DOMAIN, data) as server:
        after = httpx.get(f"{server.url}/_emsg/v1/federation/keys").json()
    assert [k["key_id"] for k in after["keys"]] == [found.group(1)]
    assert [k["key_id"] for k in before["keys"]] == [k["key_id"] for k in after["old_keys"]]


def test_rotate_key_refuses_a_folder_no_server_has_run_in(tmp_path: Path) -> None:
    typo = tmp_path / "dtaa"
    done = rotate_key(typo)
    assert done.returncode == 2
    assert one_line(done) == (
        f"error: no signing keys in {typo}: not the data folder of a homeserver that has run"
        " (check --data)"
    )
    assert not typo.exists()
