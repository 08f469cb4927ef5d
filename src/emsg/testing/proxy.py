"""An HTTP/1.1 proxy on loopback that loses sends the way networks do.

It stands between a client and a real homeserver process and relays requests and
replies as they are, one at a time per connection, except what its `mode` says
for `PUT .../send/...`:

- `pass`: relay everything;
- `drop_reply`: forward the send, let the server commit it, then close the client's
  connection without its reply (the reply lost on the way back);
- `hold`: keep the send, forward nothing and answer nothing (a client killed while
  it waits has sent a request the server never saw);
- `down`: refuse every new connection (the server out of reach).

Every request it relays is kept in `requests`, as it came, so that a test can
look at what a client put on the wire.

WebSocket upgrades are refused (404), so clients fall back to HTTP. It runs its
own event loop in a thread, so a test can use it from synchronous code (CLI
processes) as well as from async code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal

Mode = Literal["pass", "drop_reply", "hold", "down"]

_SEND = b"PUT /_emsg/v1/send/"


class FaultyProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self.mode: Mode = "pass"
        self.sends_seen = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyProxy:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = started.result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shut(self) -> None:
        """Close the listener and every connection it holds (a held send, too)."""
        if self._server is not None:
            self._server.close()
        # Until none is left: a connection accepted just before the close gets its
        # task a moment later.
        me = asyncio.current_task()
        while tasks := [t for t in asyncio.all_tasks() if t is not me]:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The loop keeps only weak references to tasks: a connection task whose
        # socket is at EOF was collected mid-wait ("Task was destroyed but it is
        # pending"), an unraisable-exception warning in whichever test ran then.
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.mode == "down":
            writer.close()
            return
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while request := await _message(reader):
                self.requests.append(request)
                if b"upgrade: websocket" in request.lower():
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                is_send = request.startswith(_SEND)
                if is_send:
                    self.sends_seen += 1
                    if self.mode == "hold":
                        while await reader.read(65536):  # until the client goes away
                            pass
                        return
                if upstream is None:
                    upstream = await asyncio.open_connection("127.0.0.1", self._upstream)
                upstream[1].write(request)
                await upstream[1].drain()
                reply = await _message(upstream[0])
                if is_send and self.mode == "drop_reply":
                    return  # the server has committed it; the client never hears
                writer.write(reply)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()
                with contextlib.suppress(OSError):
                    await upstream[1].wait_closed()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _message(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 request or reply with a Content-Length body (or none); b"" at EOF."""
    with contextlib.suppress(asyncio.IncompleteReadError):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return head + (await reader.readexactly(length) if length else b"")
    return b""
