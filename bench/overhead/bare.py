"""The bare loop's process (`--bare`): the same streams through the SDK, nothing else. The bot's
CPU is judged against it; a process of its own, so that only the streaming's CPU is counted."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.common import ROOT
from bench.overhead.workload import Workload
from bot.config import DEFAULT_SYSTEM_PROMPT

BARE_LOOPS = {
    # The bot's own request (bot.reply.stream_answer): raw events over the SDK's aiohttp
    # transport, with the client bot.app.build_claude makes. The ratio against it is the target.
    "raw": "messages.create(stream=True), aiohttp",
    # Reference: the SDK's streaming helper over its default httpx2 transport (the bot's request
    # before it moved to raw events; it rebuilds the message on every delta).
    "stream": "messages.stream(), httpx2",
}
BOT_LOOP = "raw"  # the bare loop whose request is the bot's: its ratio is the one that counts


async def bare_loop(claude_url: str, question: str, answers: int, kind: str) -> dict[str, float]:
    """Stream `answers` copies of `question` concurrently, iterating every event and nothing
    else, and count only the CPU of the streaming (after a warm-up, like the bot's)."""
    import anthropic
    import httpx2

    from bot.app import build_claude
    from bot.config import Settings

    if kind == "raw":  # exactly the bot's client
        settings = Settings(anthropic_api_key="sk-sim", anthropic_base_url=claude_url)
        client = build_claude(settings)
    else:
        client = anthropic.AsyncAnthropic(api_key="sk-sim", base_url=claude_url, max_retries=2)
    request: dict[str, Any] = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 2048,
        "system": [
            {"type": "text", "text": DEFAULT_SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
        ],
        "timeout": httpx2.Timeout(60.0, connect=10.0),
    }

    async def one(text: str) -> int:
        events = 0
        messages: Any = [{"role": "user", "content": text}]
        if kind == "raw":
            raw = await client.messages.create(messages=messages, stream=True, **request)
            async for _ in raw:
                events += 1
            return events
        async with client.messages.stream(messages=messages, **request) as stream:
            async for _ in stream:
                events += 1
        return events

    warm = Workload(deltas=20, rate=0).question()
    await asyncio.gather(*(one(warm) for _ in range(5)))
    cpu0, wall0 = time.process_time(), time.monotonic()
    events = await asyncio.gather(*(one(question) for _ in range(answers)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await client.close()
    return {"cpu_seconds": cpu, "wall_seconds": wall, "sdk_events": float(sum(events))}


async def run_bare(
    claude_url: str, workload: Workload, answers: int, kind: str
) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.overhead",
        "--bare",
        kind,
        "--claude-url",
        claude_url,
        "--question",
        workload.question(),
        "--answers",
        str(answers),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the bare loop failed (exit {process.returncode})")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result
