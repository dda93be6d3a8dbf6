"""Files in the simulated workspace: uploaded by people, listed on their messages, described by
`files.info` and served for download the way `files.slack.com` serves them.

A file object carries what Slack's does (`id`, `name`, `title`, `mimetype`, `filetype`, `size`,
`mode`, `url_private`, `url_private_download`, …), with its URLs on the simulator's own host.
Downloads follow Slack's rule: the bot token in `Authorization: Bearer` gets the bytes (when
the app has `files:read`; without it Slack answers with its sign-in page, as HTML); no token is
redirected (302) to the sign-in page; any other token gets 403. Every download request is
kept in `requests` (with whether it carried a token), for tests to assert on.

`transfer_bytes_per_second` paces the bytes of each download, to simulate a real transfer (the
file benchmark subtracts that time from what it measures); `redirects[file_id]` answers the
bot's download of that file with a redirect there (as a file host moving a file would).
"""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from bot.sim.slack_payloads import ApiError, JsonDict

if TYPE_CHECKING:
    from bot.sim.slack_api import WebApi

SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Sign in | Slack</title></head></html>"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FileRequest:
    """One download request the simulated file host answered."""

    path: str
    authorization: str | None  # the Authorization header as received
    status: int


@dataclass
class SimFile:
    id: str
    name: str
    data: bytes
    mimetype: str
    filetype: str
    user: str
    # "check_file_info": events and messages carry a stub without URLs (Slack Connect files)
    access: str = ""


class SimFiles:
    """The workspace's files and its file host. `base_url` is set when the sim is served."""

    def __init__(self, api: WebApi) -> None:
        self.api = api
        self.base_url = ""
        self.files: dict[str, SimFile] = {}
        self.requests: list[FileRequest] = []
        self.transfer_bytes_per_second: float | None = None
        self.redirects: dict[str, str] = {}  # file id -> where its download redirects to
        self._ids = 0

    # --- uploads -------------------------------------------------------------------------------

    def upload(
        self,
        name: str,
        data: bytes,
        *,
        mimetype: str | None = None,
        filetype: str | None = None,
        user: str = "U0ALICE",
        access: str = "",
    ) -> JsonDict:
        """Keep a file as a person uploaded it; returns its file object, for a message's
        `files` (`post_user_message(files=…)`)."""
        self._ids += 1
        file_id = f"F{self._ids:08d}"
        guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
        kind = mimetype or guessed
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
        self.files[file_id] = SimFile(file_id, name, data, kind, filetype or ext, user, access)
        return self.object(file_id)

    def object(self, file_id: str, *, full: bool = False) -> JsonDict:
        """A file object as events and `conversations.replies` carry it (`full`: as
        `files.info` does, never a stub)."""
        f = self.files[file_id]
        team = self.api.workspace.team_id
        if f.access == "check_file_info" and not full:
            return {"id": f.id, "mode": "file_access", "file_access": "check_file_info"}
        private = f"{self.base_url}/files-pri/{team}-{f.id}/{quote(f.name)}"
        return {
            "id": f.id,
            "created": 1_700_000_000,
            "timestamp": 1_700_000_000,
            "name": f.name,
            "title": f.name,
            "mimetype": f.mimetype,
            "filetype": f.filetype,
            "pretty_type": f.filetype.upper(),
            "user": f.user,
            "user_team": team,
            "mode": "hosted",
            "editable": False,
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "size": len(f.data),
            "url_private": private,
            "url_private_download": (
                f"{self.base_url}/files-pri/{team}-{f.id}/download/{quote(f.name)}"
            ),
            "permalink": f"https://sim.slack.invalid/files/{f.user}/{f.id}/{quote(f.name)}",
        }

    # --- Web API -------------------------------------------------------------------------------

    def info(self, p: JsonDict) -> JsonDict:
        """`files.info`: the file's whole object (the caller is the bot, with its token)."""
        file_id = str(p.get("file") or "")
        if file_id not in self.files:
            raise ApiError("file_not_found")
        if "files:read" not in self.api.scopes:
            raise ApiError("missing_scope")
        return {"file": self.object(file_id, full=True), "comments": [], "response_metadata": {}}

    # --- the file host -------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._serve)
        app.router.add_get("/files-pri/{team_file}/{name}", self._serve)
        app.router.add_get("/signin", self._sign_in)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        status, response = self._answer(request, auth)
        self.requests.append(FileRequest(request.path, auth, status))
        self.api.workspace.notify()
        if response is not None:
            return response
        f = self.files[request.match_info["team_file"].partition("-")[2]]
        stream = web.StreamResponse(
            headers={"Content-Type": f.mimetype, "Content-Length": str(len(f.data))}
        )
        await stream.prepare(request)
        rate = self.transfer_bytes_per_second
        loop = asyncio.get_running_loop()
        began = loop.time()
        for start in range(0, len(f.data), _CHUNK):
            chunk = f.data[start : start + _CHUNK]
            if rate:  # simulated transfer time: each chunk when the rate says it is due
                await asyncio.sleep(max(0.0, began + (start + len(chunk)) / rate - loop.time()))
            await stream.write(chunk)
        await stream.write_eof()
        return stream

    def _answer(self, request: web.Request, auth: str | None) -> tuple[int, web.Response | None]:
        """(status, the response) for a request that gets no file; (200, None) for one that
        does."""
        team, _, file_id = request.match_info["team_file"].partition("-")
        token = auth.removeprefix("Bearer ").strip() if auth and auth.startswith("Bearer ") else ""
        if not token:
            location = f"/signin?redir={quote(request.path)}"
            return 302, web.Response(status=302, headers={"Location": location})
        if token != self.api.bot_token:
            return 403, web.Response(status=403, text="forbidden")
        if team != self.api.workspace.team_id or file_id not in self.files:
            return 404, web.Response(status=404, text="file not found")
        if file_id in self.redirects:
            return 302, web.Response(status=302, headers={"Location": self.redirects[file_id]})
        if "files:read" not in self.api.scopes:  # Slack's answer: its sign-in page
            return 200, web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        return 200, None

    async def _sign_in(self, request: web.Request) -> web.Response:
        return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
