"""How every command runs its async work: anyio on asyncio, on uvloop's event loop when installed.

Why uvloop (a dependency wherever it exists; Windows has none): measured on the side-by-side
fleet (``benchmarks/README.md``), a scan costs the same CPU per call on either loop but peaks
about 27-30 MB lower on uvloop, with its up to ``concurrency`` (128) TLS connections open. Both
loops give a TLS connection a 256 KiB read buffer, so that is not the difference; where asyncio's
extra memory goes was not traced. Without uvloop, asyncio's own loop runs the same code: the
library itself never chooses a loop, its caller does.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

_T = TypeVar("_T")

#: Whether uvloop can be imported (looked up once, without importing it: ``--help`` stays fast).
UVLOOP = importlib.util.find_spec("uvloop") is not None


def run_async(fn: Callable[[], Awaitable[_T]]) -> _T:
    """``fn()`` to completion in a new event loop (uvloop's when installed)."""
    return anyio.run(fn, backend="asyncio", backend_options={"use_uvloop": UVLOOP})
