"""Load benchmark for one homeserver on loopback, with real E2E encryption on both ends.

Not a test: it prints figures for docs/benchmarks.md. It starts a real server process
(SQLite in a temporary folder, rate limits raised so that the limiter is not what is
measured) and drives it with real `emsg.client.Client`s in this process, so the load
generator shares the machine's cores with the server, as the targets require.

    python benchmarks/load.py                # everything
    python benchmarks/load.py --only latency --messages 500

Phases:
- throughput: N sender clients (1, 10, 50) each send to their own listening receiver
  over HTTP; messages/s accepted (acknowledged sends) and delivered (decrypted by the
  receiver), every one committed before it was acknowledged. Each sender waits for
  each send's acknowledgement before the next (`--window` sends at a time if more).
- pipelined: senders that hold the WebSocket stream open send over it with a window
  of concurrent sends, each acknowledged by transaction id. Run twice: with the
  receivers in this process, and with them in a process of their own
  (`receivers.py`), as other people's devices would be: in one process the load
  generator's single event loop is the limit (one core busy, the other partly
  idle). `--split-http` does the same for the HTTP runs. The load generator's
  CPU counts both processes; `receivers_cpu_us_per_msg` is the receivers' part.
- latency: one sender at a steady 100 messages/s, one receiver listening on the
  WebSocket; p50/p95/p99 from just before `send_text` to the decrypted message.
- idle: server RSS with 1,000 idle authenticated WebSocket connections.

This VM's speed swings by half within seconds (a fixed pure-Python loop takes
21 ms in one second and 31 ms the next), so one run of a few seconds lands in
a fast or a slow phase by chance. Each throughput and pipelined configuration
therefore runs `--repeat` times (3 by default) and is summarised by its median,
with the lowest and highest; every run records `probe_ms`, the time of that
fixed loop just before it, to show which phase it had.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx
import websockets

from emsg.client import Client
from emsg.crypto.keys import FAST_KDF_FOR_TESTS
from emsg.testing import ServerProcess

DOMAIN = "bench.test"
PASSWORD = "benchmark password"
CONFIG = """
token_ttl = "1d"
[limits]
account_rate = 1000000
account_burst = 1000000
ip_auth_rate_per_minute = 1000000
ip_auth_burst = 1000000
"""


@dataclass
class Receiver:
    client: Client
    expected: int = 0
    received: int = 0
    arrivals: dict[str, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def expect(self, count: int) -> None:
        """Count afresh: `done` is set once `count` more messages have arrived."""
        self.expected, self.received = count, 0
        self.done.clear()

    async def run(self) -> None:
        async for event in self.client.listen():
            if event.message is None:
                continue
            self.arrivals[event.message.body] = time.perf_counter()
            self.received += 1
            if self.received >= self.expected:
                self.done.set()


class Cpu:
    """CPU time per message of the server(s) and of this load generator."""

    def __init__(self, *servers: ServerProcess | None) -> None:
        self._servers = [s for s in servers if s is not None]
        self._start = [s.cpu_seconds() for s in self._servers] + [time.process_time()]
        self._used: list[float] = []

    def stop(self, extra_loadgen_seconds: float = 0.0) -> None:
        """`extra_loadgen_seconds`: what the load generator's other process used."""
        end = [s.cpu_seconds() for s in self._servers] + [
            time.process_time() + extra_loadgen_seconds
        ]
        self._used = [b - a for a, b in zip(self._start, end, strict=True)]

    def per_message(self, count: int) -> dict[str, float]:
        *servers, loadgen = (round(u / count * 1e6) for u in self._used)
        return {"server_cpu_us_per_msg": sum(servers), "loadgen_cpu_us_per_msg": loadgen}


async def make_clients(server: ServerProcess, root: Path, prefix: str, n: int) -> list[Client]:
    async def one(i: int) -> Client:
        address = f"{prefix}{i}#{server.domain}"
        return await Client.register(
            root / f"{prefix}{i}", address, PASSWORD, server.url, kdf=FAST_KDF_FOR_TESTS
        )

    clients = []
    for start in range(0, n, 10):  # a few at a time: registration hashes passwords
        clients += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 10))))
    return clients


async def start_receivers(clients: list[Client]) -> list[Receiver]:
    receivers = [Receiver(c) for c in clients]
    for r in receivers:
        r.task = asyncio.create_task(r.run())
    await asyncio.sleep(0.5)  # let every stream authenticate
    return receivers


async def stop(receivers: list[Receiver]) -> None:
    for r in receivers:
        if r.task is not None:
            r.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await r.task


async def warm_up(senders: list[Client], receivers: list[Receiver]) -> None:
    """Establish the Olm sessions first: the steady state is what is measured."""
    for r in receivers:
        r.expect(1)
    await asyncio.gather(
        *(
            s.send_text(str(r.client.address), "warm-up")
            for s, r in zip(senders, receivers, strict=True)
        )
    )
    await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in receivers)), 60)


class ReceiverProcess:
    """`receivers.py`: the receiving clients listening in a process of their own."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.cpu_at_start = 0.0

    @classmethod
    async def start(cls, homes: list[Path]) -> ReceiverProcess:
        script = Path(__file__).with_name("receivers.py")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdin=PIPE, stdout=PIPE
        )
        self = cls(proc)
        await self._ask({"open": [str(h) for h in homes], "password": PASSWORD})
        return self

    async def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self._proc.stdin.drain()
        return await self._answer()

    async def _answer(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the receiver process died")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def expect(self, n: int) -> None:
        self.cpu_at_start = (await self._ask({"expect": n}))["cpu"]

    async def done(self) -> tuple[float, float]:
        """When the last message arrived, and the CPU seconds it took since `expect`."""
        answer = await asyncio.wait_for(self._answer(), 600)
        return answer["done"], answer["cpu"] - self.cpu_at_start

    async def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            assert self._proc.stdin is not None
            self._proc.stdin.write(b'{"quit": true}\n')
            await self._proc.stdin.drain()
        try:
            await asyncio.wait_for(self._proc.wait(), 30)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


async def throughput(
    server: ServerProcess,
    root: Path,
    n: int,
    total: int,
    window: int,
    pipelined: bool,
    receiver_server: ServerProcess | None = None,
    split: bool = False,
) -> dict[str, Any]:
    """N senders on `server`, each to its own receiver (on `receiver_server` if given);
    with `split`, the receivers listen in a process of their own."""
    tag = f"{'p' if pipelined else 't'}{n}x{secrets.token_hex(2)}"
    senders = await make_clients(server, root, f"s{tag}", n)
    receiving = await make_clients(receiver_server or server, root, f"r{tag}", n)
    addresses = [str(c.address) for c in receiving]
    other: ReceiverProcess | None = None
    receivers: list[Receiver] = []
    if split:
        for c in receiving:
            await c.aclose()
        other = await ReceiverProcess.start([root / f"r{tag}{i}" for i in range(n)])
    else:
        receivers = await start_receivers(receiving)
    sender_streams = await start_receivers(senders) if pipelined else []
    per_sender = max(1, total // n)

    async def expect(count: int) -> None:
        if other is not None:
            await other.expect(count)
        for r in receivers:
            r.expect(count)

    async def all_done() -> tuple[float, float]:
        if other is not None:
            return await other.done()
        await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in receivers)), 600)
        return time.perf_counter(), 0.0

    try:
        # Establish the Olm sessions first: the steady state is what is measured.
        await expect(1)
        pairs = list(zip(senders, addresses, strict=True))
        await asyncio.gather(*(s.send_text(to, "warm-up") for s, to in pairs))
        await asyncio.wait_for(all_done(), 60)
        await expect(per_sender)

        async def run_sender(sender: Client, to: str) -> None:
            if window == 1:  # each send waits for the last, as a plain loop would
                for i in range(per_sender):
                    await sender.send_text(to, f"{tag}-{i}")
                return
            pending: set[asyncio.Task[Any]] = set()
            for i in range(per_sender):
                if len(pending) >= window:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.add(asyncio.create_task(sender.send_text(to, f"{tag}-{i}")))
            await asyncio.gather(*pending)

        cpu = Cpu(server, receiver_server)
        start = time.perf_counter()
        await asyncio.gather(*(run_sender(s, to) for s, to in pairs))
        accepted = time.perf_counter() - start
        last_arrival, receiver_cpu = await all_done()
        delivered = last_arrival - start
        cpu.stop(extra_loadgen_seconds=receiver_cpu)
    finally:
        await stop(receivers + sender_streams)
        if other is not None:
            await other.close()
        for c in senders + [r.client for r in receivers]:
            await c.aclose()
    count = per_sender * n
    return {
        "senders": n,
        "route": "websocket (pipelined)" if pipelined else "http",
        "window": window,
        "load_generator": "senders and receivers in two processes" if split else "one process",
        "messages": count,
        "accepted_per_s": round(count / accepted),
        "delivered_per_s": round(count / delivered),
        **cpu.per_message(count),
        **({"receivers_cpu_us_per_msg": round(receiver_cpu / count * 1e6)} if split else {}),
    }


async def latency(
    server: ServerProcess,
    root: Path,
    rate: float,
    count: int,
    receiver_server: ServerProcess | None = None,
) -> dict[str, Any]:
    """Send-to-receipt latency at a steady rate (receiver on `receiver_server` if given)."""
    tag = f"l{secrets.token_hex(2)}"
    (sender,) = await make_clients(server, root, f"s{tag}", 1)
    receivers = await start_receivers(
        await make_clients(receiver_server or server, root, f"r{tag}", 1)
    )
    receiver = receivers[0]
    try:
        await warm_up([sender], receivers)
        receiver.expect(count)
        sent_at: dict[str, float] = {}
        to = str(receiver.client.address)
        tasks = []
        start = time.perf_counter()
        for i in range(count):
            body = f"{tag}-{i}"
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[body] = time.perf_counter()
            tasks.append(asyncio.create_task(sender.send_text(to, body)))
        await asyncio.gather(*tasks)
        await asyncio.wait_for(receiver.done.wait(), 120)
    finally:
        await stop(receivers)
        await sender.aclose()
        await receiver.client.aclose()
    millis = sorted((receiver.arrivals[b] - t) * 1000 for b, t in sent_at.items())
    q = statistics.quantiles(millis, n=100, method="inclusive")
    return {
        "rate_per_s": rate,
        "messages": count,
        "p50_ms": round(q[49], 2),
        "p95_ms": round(q[94], 2),
        "p99_ms": round(q[98], 2),
        "max_ms": round(millis[-1], 2),
    }


async def idle_connections(server: ServerProcess, connections: int) -> dict[str, Any]:
    accounts = 20
    async with httpx.AsyncClient(base_url=server.url) as http:
        tokens = []
        for i in range(accounts):
            reply = await http.post(
                "/_emsg/v1/accounts",
                json={
                    "address": f"idle{i}x{secrets.token_hex(2)}#{server.domain}",
                    "password": PASSWORD,
                },
            )
            reply.raise_for_status()
            tokens.append(reply.json()["token"])
    await asyncio.sleep(1.0)
    before = server.rss_bytes()
    url = server.url.replace("http://", "ws://") + "/_emsg/v1/stream"
    sockets = []
    try:
        for i in range(connections):
            ws = await websockets.connect(url, max_size=1 << 20)
            await ws.send(json.dumps({"type": "auth", "token": tokens[i % accounts], "since": 0}))
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready", ready
            sockets.append(ws)
        await asyncio.sleep(2.0)
        after = server.rss_bytes()
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "connections": connections,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "kib_per_connection": round((after - before) / connections / 1024, 1),
    }


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {
        "machine": f"{processor()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="emsg-bench-") as tmp:
        root = Path(tmp)
        config = root / "server.toml"
        config.write_text(CONFIG)
        server = ServerProcess(DOMAIN, root / "server", config=config).start()
        try:
            phases: dict[str, Callable[[], Awaitable[Any]]] = {
                "throughput": lambda: sequential(
                    repeated(
                        args.repeat,
                        lambda n=n, split=split: throughput(
                            server, root, n, args.messages, args.window, False, split=split
                        ),
                    )
                    for n in args.senders
                    for split in ([False, True] if args.split_http else [False])
                ),
                "pipelined": lambda: sequential(
                    repeated(
                        args.repeat,
                        lambda n=n, split=split: throughput(
                            server, root, n, args.messages, args.pipeline_window, True, split=split
                        ),
                    )
                    for n in args.pipelined_senders
                    for split in (False, True)
                ),
                "latency": lambda: latency(server, root, args.rate, args.latency_messages),
                "idle": lambda: idle_connections(server, args.connections),
            }
            for name, run in phases.items():
                if args.only and name not in args.only:
                    continue
                results[name] = await run()
                print(json.dumps({name: results[name]}), flush=True)
        finally:
            server.stop()
    print(json.dumps(results, indent=2))


async def sequential(runs: Any) -> list[Any]:
    return [await r for r in runs]


def processor() -> str:
    """The CPU model (the VMs this runs on have differed in it), else the architecture."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.machine()


def speed_probe() -> float:
    """Milliseconds for a fixed pure-Python loop: the machine's current pace."""
    start = time.perf_counter()
    total = 0
    for i in range(300_000):
        total += i * i % 7
    return round((time.perf_counter() - start) * 1000, 1)


async def repeated(times: int, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """One configuration run `times` times: the median run's figures, the spread of
    the delivered rate, and every run (each with the speed probe taken before it)."""
    runs = []
    for _ in range(times):
        probe = speed_probe()
        runs.append({**await run(), "probe_ms": probe})
    by_rate = sorted(runs, key=lambda r: r["delivered_per_s"])
    median = by_rate[len(by_rate) // 2]
    return {
        **{k: v for k, v in median.items() if k != "probe_ms"},
        "delivered_per_s_min": by_rate[0]["delivered_per_s"],
        "delivered_per_s_max": by_rate[-1]["delivered_per_s"],
        "runs": [
            {
                k: r[k]
                for k in (
                    "delivered_per_s",
                    "server_cpu_us_per_msg",
                    "loadgen_cpu_us_per_msg",
                    "probe_ms",
                )
            }
            for r in runs
        ],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=["throughput", "pipelined", "latency", "idle"])
    parser.add_argument("--messages", type=int, default=3000, help="per throughput run")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each throughput configuration (median kept)"
    )
    parser.add_argument("--senders", type=int, nargs="*", default=[1, 10, 50])
    parser.add_argument("--window", type=int, default=1, help="concurrent sends per HTTP sender")
    parser.add_argument("--pipelined-senders", type=int, nargs="*", default=[1, 10])
    parser.add_argument("--pipeline-window", type=int, default=64)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--latency-messages", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument(
        "--split-http", action="store_true",
        help="also run the HTTP throughput with the receivers in a process of their own",
    )  # fmt: skip
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
