"""Attempts of one download, whatever the protocol: transient failures retried with backoff,
all of them within the total time limit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tftproxy.errors import UpstreamError
from tftproxy.fetch.options import FetchOptions

log = logging.getLogger(__name__)
T = TypeVar("T")


async def retrying(options: FetchOptions, url: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
    """Run attempts until one succeeds, retrying only what is transient (``retryable``)."""
    o = options
    attempt = 0
    deadline = time.monotonic() + o.total_timeout
    while True:
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                return await attempt_once()
        except TimeoutError:
            raise UpstreamError(
                f"gave up after the total time limit of {o.total_timeout:g} s"
            ) from None
        except UpstreamError as exc:
            if not exc.retryable or attempt >= o.retries:
                if attempt:
                    raise UpstreamError(f"{exc.reason} (after {attempt + 1} attempts)",
                                        local=exc.local) from None
                raise
            delay = o.retry_backoff * (2**attempt)
            attempt += 1
            log.warning("%s: %s; retry %d/%d in %.1f s", url, exc.reason, attempt,
                        o.retries, delay)
            await asyncio.sleep(delay)


def _loop_deadline(monotonic_deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())
