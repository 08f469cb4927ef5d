"""The receiving side of a throughput run, in a process of its own.

Started by `load.py` (not run by hand). Receivers are other people's devices: in
one process with the senders, the load generator's single event loop decrypting
and storing every message as well as encrypting it was what limited the
measured rate (one core busy, the other partly idle). Here they listen in their
own process, on profiles the parent registered and closed.

Commands come as JSON lines on stdin, answers go as JSON lines on stdout:
- {"open": [home, ...], "password": ...} -> {"ready": true} once every stream is up
- {"expect": n} -> {"cpu": s}; later {"done": t, "cpu": s} once every receiver has
  n messages (t: time.perf_counter(), the same monotonic clock as the parent's)
- {"quit": true} -> closes the clients and exits
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find benchmarks/

from benchmarks.load import Receiver, start_receivers, stop

from emsg.client import Client


def answer(value: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    receivers: list[Receiver] = []
    waiting: asyncio.Task[None] | None = None

    async def report_done() -> None:
        await asyncio.gather(*(r.done.wait() for r in receivers))
        answer({"done": time.perf_counter(), "cpu": time.process_time()})

    try:
        while line := await reader.readline():
            command = json.loads(line)
            if "open" in command:
                clients = [await Client.open(Path(h), command["password"]) for h in command["open"]]
                receivers = await start_receivers(clients)
                answer({"ready": True})
            elif "expect" in command:
                for r in receivers:
                    r.expect(command["expect"])
                waiting = asyncio.create_task(report_done())
                answer({"cpu": time.process_time()})
            elif "quit" in command:
                break
    finally:
        if waiting is not None:
            waiting.cancel()
        await stop(receivers)
        for r in receivers:
            await r.client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
