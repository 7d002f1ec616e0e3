"""An asyncio event loop in a daemon thread, for servers that sync code and tests start and stop.

The emulator's :class:`EmulatorThread` and the tests' scripted gateway both need one: a server
started inside the loop before ``start`` returns (its failure raised to the caller), stopped and
cleaned up inside the loop by ``stop``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable


class LoopThread:
    """Runs ``setup`` in a new asyncio loop in a daemon thread, then the loop until
    :meth:`stop`, which runs ``teardown`` in it before the loop closes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.loop is not None and self.loop.is_running()

    def start(
        self,
        setup: Callable[[], Awaitable[None]],
        teardown: Callable[[], Awaitable[None]],
        timeout: float = 30,
    ) -> None:
        if self._thread is not None:
            raise RuntimeError(f"the {self.name} thread is already running")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(setup())
            except BaseException as exc:
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(teardown())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name=self.name, daemon=True)
        self.loop, self._thread = loop, thread
        thread.start()
        try:
            started.result(timeout=timeout)
        except BaseException:
            thread.join(timeout=5)
            self.loop = self._thread = None
            raise

    def stop(self, timeout: float = 30) -> None:
        """End the loop (its ``teardown`` runs in it) and wait for the thread."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=timeout)
        self.loop = self._thread = None
