"""The Python peer (webrtc_client.PythonPeer) on its own event loop in a thread, for tests whose
main thread belongs to Playwright's sync API."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any


class PeerThread:
    """A PythonPeer (or, with ``room=True``, a RoomPeer: ``PeerThread(ws, id, room, room=True)``)
    running on its own event loop in a thread (Playwright's sync API owns this one)."""

    def __init__(self, *args: Any, room: bool = False, **kwargs: Any) -> None:
        import webrtc_client  # here: importing this module must not need aiortc

        self.loop = asyncio.new_event_loop()
        self.peer = (webrtc_client.RoomPeer if room else webrtc_client.PythonPeer)(*args, **kwargs)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = self.loop.create_task(self.peer.run())
        # run_forever, not run_until_complete(run()): stop() still needs the loop after run() returns.
        self.loop.run_forever()

    def call(self, coroutine: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return  # stopped already

        async def finish() -> None:
            await self.peer.stop()
            await self.runner

        try:
            self.call(finish(), timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
