"""Closed-loop HTTP load for `busnet bench serve`, run in its own process.

`concurrency` clients each send a request, wait for the answer, and send the next, until
`max_requests` were sent or `duration_s` passed, whichever comes first. A separate process (and
asyncio with aiohttp inside it) keeps the load generator from competing with the driver's GIL.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp


def drive(
    url: str,
    body: bytes,
    content_type: str,
    concurrency: int,
    max_requests: int,
    duration_s: float,
    timeout_s: float = 60.0,
) -> dict:
    """Run the load; returns latencies of successful requests, error count and a few error texts."""
    return asyncio.run(_drive(url, body, content_type, concurrency, max_requests, duration_s, timeout_s))


async def _drive(
    url: str, body: bytes, content_type: str, concurrency: int, max_requests: int, duration_s: float, timeout_s: float
) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    start = time.perf_counter()
    deadline = start + duration_s

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < deadline:
            sent += 1
            began = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": content_type}) as resp:
                    await resp.read()
                    if resp.status == 200:
                        latencies.append(time.perf_counter() - began)
                    else:
                        errors.append(f"HTTP {resp.status}")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return {
        "latencies_s": latencies,
        "errors": len(errors),
        "error_samples": errors[:3],
        "elapsed_s": time.perf_counter() - start,
    }
