"""The simulated Slack's Socket Mode: the WebSocket a bot opens with its app token (the URL
comes from `apps.connections.open`), `hello`, then envelopes out and acknowledgements in."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from bot.sim.slack_payloads import JsonDict


class SocketMode:
    """Open connections, and the envelope ids the bot acknowledged (`acks`, in order);
    `notify` is called on every connection, disconnection and acknowledgement."""

    def __init__(self, notify: Callable[[], None]) -> None:
        self.acks: list[str] = []
        self._notify = notify
        self._sockets: list[web.WebSocketResponse] = []
        self._envelopes = 0

    @property
    def connections(self) -> int:
        return len(self._sockets)

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """One Socket Mode connection, until the bot or the server closes it."""
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "connection_info": {"app_id": "A0001"},
            }
        )
        self._notify()
        try:
            async for frame in ws:
                if frame.type != web.WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                if isinstance(message, dict) and message.get("envelope_id"):
                    self.acks.append(str(message["envelope_id"]))
                    self._notify()
        finally:
            self._sockets.remove(ws)
            self._notify()
        return ws

    async def push(self, payload: JsonDict, *, kind: str = "events_api") -> str:
        """Deliver an Events API envelope (or `kind="interactive"` payload) over the newest
        connection; returns its envelope id, which the bot must acknowledge."""
        if not self._sockets:
            raise RuntimeError("no Socket Mode connection is open")
        self._envelopes += 1
        envelope_id = f"env-{self._envelopes}"
        await self._sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": False,
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        return envelope_id

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
