"""The event loop of the plant's long-running processes: uvloop (libuv) where it is installed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop: its socket transports and callbacks cost less CPU per
    Modbus or SCPI exchange than asyncio's selector loop, and the line's loop is CPU-bound."""
    if os.environ.get("PLANT_EVENT_LOOP") == "asyncio":
        return asyncio.run(main)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
