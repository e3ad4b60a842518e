"""The clients of :func:`labkit.servers.load.load`: a program run in a child process.

    python loadclient.py < job.json      # prints {"completed": ..., "latencies": [...], ...}

It reads one job (JSON on stdin: host, port, clients, requests, message and expect in
hex, hold_open, timeout), runs one asyncio task per client, and prints what it
measured as JSON.  It imports only the standard library (``load`` starts it with
``python -I -S``), so it starts in milliseconds and never loads labkit itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def _client(job: dict[str, Any], message: bytes, expect: bytes,
                  barrier: asyncio.Barrier | None, latencies: list[float],
                  errors: dict[str, int]) -> None:
    writer = None
    try:
        try:
            reader, writer = await asyncio.open_connection(job["host"], job["port"])
            for _ in range(job["requests"]):
                started = time.perf_counter()
                writer.write(message)
                reply = await reader.readexactly(len(expect))
                if reply != expect:
                    errors["wrong answer"] = errors.get("wrong answer", 0) + 1
                    break
                latencies.append(time.perf_counter() - started)
        except (OSError, asyncio.IncompleteReadError) as exc:
            kind = "connection closed early" if isinstance(exc, asyncio.IncompleteReadError) \
                else type(exc).__name__
            errors[kind] = errors.get(kind, 0) + 1
        if barrier is not None:
            await barrier.wait()  # hold the connection open until everybody is done
    finally:
        if writer is not None:
            writer.close()


async def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    message, expect = bytes.fromhex(job["message"]), bytes.fromhex(job["expect"])
    barrier = asyncio.Barrier(job["clients"]) if job["hold_open"] else None
    latencies: list[float] = []
    errors: dict[str, int] = {}
    started = time.perf_counter()
    tasks = [asyncio.create_task(_client(job, message, expect, barrier, latencies, errors))
             for _ in range(job["clients"])]
    _finished, pending = await asyncio.wait(tasks, timeout=job["timeout"])
    elapsed = time.perf_counter() - started
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    return {"completed": len(latencies), "elapsed": elapsed, "latencies": latencies,
            "errors": errors, "timed_out": bool(pending)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_run_job(json.loads(sys.stdin.read())))))
