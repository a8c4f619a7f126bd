"""A TCP proxy on loopback that delays every chunk by a fixed time in each
direction: a Redis `delay` seconds away, one way (so a round trip costs
2 × delay more). Latency only, not bandwidth: chunks keep their order.

Runs an asyncio loop on a daemon thread of the harness; `close()` stops it
and closes every socket.
"""

from __future__ import annotations

import asyncio
import threading

from . import procs


class DelayProxy:
    def __init__(self, upstream_port: int, delay_s: float):
        self.upstream_port = upstream_port
        self.delay = delay_s
        self.port = procs.free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"delay-proxy-{self.port}")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delay proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forwards each chunk `delay` after it arrived. Chunks are scheduled
        on the loop's monotonic clock with one fixed delay, so they leave in
        the order they came."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                loop.call_later(self.delay, self._send, writer, data)
        except (ConnectionError, OSError):
            pass
        loop.call_later(self.delay, self._close, writer)

    @staticmethod
    def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        if not writer.is_closing():
            writer.write(data)

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        if not writer.is_closing():
            writer.close()

    def close(self) -> None:
        def shutdown():
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
            self._loop.stop()

        if self._loop.is_running():
            self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(timeout=5)
