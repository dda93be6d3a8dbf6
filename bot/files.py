"""Files in a thread, fetched for Claude: downloaded from Slack with the bot token, prepared
(`bot.imaging`, `bot.attachments`) and kept in the store for the thread's follow-up questions.

**The bot token goes only to Slack's own file hosts**: `files.slack.com` over HTTPS, or the
host (scheme, name and port) of `SLACK_API_URL`. A file whose URL points anywhere else is not
downloaded at all, and a redirect is followed only to those hosts, so the token is never sent
elsewhere and the bot fetches nothing from a host a message could name.

Downloads are bounded: a file over `MAX_FILE_BYTES` (by its `size`, its `Content-Length` or
what arrives) is left out, never half-sent; the files of one answer together are bounded by
`MAX_FILES_TOTAL_BYTES` and the number by `MAX_FILES`, and all of them by one deadline,
`FILE_DOWNLOAD_TIMEOUT_SECONDS`. A text file is read only as far as `MAX_FILE_TEXT_CHARS`
needs. When a limit leaves something out, the question's own files are served first, then
the thread's from the newest message back.

A prepared file (its Claude block) is kept in the store by file ID for
`FILE_CACHE_SECONDS`; a file that can never be sent (an image that cannot be decoded, a
password-protected PDF) is remembered as such. Transient failures are not remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from bot import attachments as att
from bot.attachments import Attachment, Kind
from bot.config import Settings
from bot.conversation import estimate_tokens
from bot.imaging import ImageError, prepare_image
from bot.slackapi import SlackCalls, SlackFailure
from bot.slackts import ts_before, ts_key
from bot.store import Store, StoreError

log = logging.getLogger(__name__)

SLACK_FILE_HOST = ("https", "files.slack.com", 443)
MAX_FILES = 20  # files one answer reads at most (the question's first, then the newest)
MAX_PARALLEL = 4  # downloads of one answer at a time
MAX_REDIRECTS = 3
CACHE_VERSION = 1  # part of every cached entry: a new layout ignores the old entries
CHUNK = 256 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Refused(Exception):
    """The file was not downloaded; `reason` is the few words the closing line shows."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, the port made explicit; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("https", "http") or not host:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


def token_hosts(slack_api_url: str) -> frozenset[tuple[str, str, int]]:
    """Where the bot token may be sent with a file download."""
    api = origin(slack_api_url)
    return frozenset({SLACK_FILE_HOST, *([api] if api else [])})


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:,.3g} MB"


@dataclass(frozen=True)
class ThreadFiles:
    """The files of a thread's messages, by message ts, in the order they were posted."""

    by_ts: Mapping[str, tuple[Attachment, ...]] = field(default_factory=dict)
    # Files whose message is the question, or came after the bot's previous answer: the only
    # ones the closing line names (the files of older messages were named under that answer).
    new: frozenset[str] = frozenset()

    @property
    def sent(self) -> int:
        return sum(a.sent for files in self.by_ts.values() for a in files)

    def closing_note(self, over_budget: Sequence[Attachment] = ()) -> str | None:
        """The answer's closing line about files: those left out or cut, and why."""
        budget_ids = {a.file_id for a in over_budget}
        named = [
            a
            for files in self.by_ts.values()
            for a in files
            if a.file_id in self.new and a.reason and a.file_id not in budget_ids
        ]
        named += [a for a in over_budget if a.file_id in self.new]
        return att.closing_note(named)

    def without_files(self, reason: str) -> ThreadFiles:
        """Every sent file left out (Claude refused the request with them)."""
        by_ts = {
            ts: tuple(a.left_out(reason) if a.sent else a for a in files)
            for ts, files in self.by_ts.items()
        }
        return ThreadFiles(by_ts, self.new)


NO_FILES = ThreadFiles()


class FileReader:
    """Fetches the files of one answer's thread. See the module docstring."""

    def __init__(
        self,
        *,
        slack: SlackCalls,
        store: Store,
        settings: Settings,
        log: logging.Logger | logging.LoggerAdapter[Any] = log,
    ) -> None:
        self.slack = slack
        self.store = store
        self.settings = settings
        self.log = log
        self.hosts = token_hosts(settings.slack_api_url)

    async def read(
        self,
        thread: Sequence[Mapping[str, Any]],
        *,
        team_id: str,
        question_ts: str,
        own: Sequence[str] = (),
    ) -> ThreadFiles:
        """The files of the messages up to the question, ready for `build_conversation`.
        `own` are the bot's user and bot IDs (its answers, which carry no files of people's)."""
        posted: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
        last_answer = ""
        for message in thread:
            ts = str(message.get("ts") or "")
            if not ts or ts in posted or ts_before(question_ts, ts):
                continue
            if own and (message.get("bot_id") in own or message.get("user") in own):
                if ts != question_ts and (not last_answer or ts_before(last_answer, ts)):
                    last_answer = ts
                continue
            files = [f for f in message.get("files") or [] if isinstance(f, Mapping)]
            if files:
                posted[ts] = list(enumerate(files))
        if not posted:
            return NO_FILES
        # The question's files first, then the newest message's, back to the oldest.
        order = sorted(posted, key=lambda ts: (ts != question_ts, _newest_first(ts)))
        chosen = [(ts, i, f) for ts in order for i, f in posted[ts]]
        results = await self._fetch_all(chosen, team_id)
        results = _within_request(chosen, results)
        by_ts = {
            ts: tuple(results[(ts, i)] for i, _ in posted[ts]) for ts in sorted(posted, key=ts_key)
        }
        new = frozenset(
            a.file_id
            for ts, files in by_ts.items()
            if ts == question_ts or not last_answer or ts_before(last_answer, ts)
            for a in files
        )
        return ThreadFiles(by_ts, new)

    # -- choosing and fetching --------------------------------------------------------------------

    async def _fetch_all(
        self, chosen: list[tuple[str, int, Mapping[str, Any]]], team_id: str
    ) -> dict[tuple[str, int], Attachment]:
        limit = self.settings.max_file_bytes
        total_limit = self.settings.max_files_total_bytes
        results: dict[tuple[str, int], Attachment] = {}
        jobs: list[tuple[tuple[str, int], Mapping[str, Any], Attachment]] = []
        total = count = 0
        described = await asyncio.gather(
            *(self._described(file, n) for n, (_, _, file) in enumerate(chosen))
        )
        for (ts, i, stub), file in zip(chosen, described, strict=True):
            if isinstance(file, Refused):
                name = att.file_name(stub)
                results[ts, i] = Attachment(
                    str(stub.get("id")), name, Kind.OTHER, reason=file.reason
                )
                continue
            kind, what = att.kind_of(file)
            base = Attachment(str(file.get("id") or f"{ts}/{i}"), att.file_name(file), kind)
            size = _size(file)
            gone = att.unavailable(file)
            if gone is not None:
                results[ts, i] = base.left_out(gone)
            elif kind is Kind.OTHER:
                results[ts, i] = base.left_out(what)
            elif size > limit:
                results[ts, i] = base.left_out(f"over the {megabytes(limit)} limit")
            elif count >= MAX_FILES:
                results[ts, i] = base.left_out(f"more than {MAX_FILES} files in the thread")
            elif total + size > total_limit:
                results[ts, i] = base.left_out(f"over the {megabytes(total_limit)} per answer")
            else:
                total += size
                count += 1
                jobs.append(((ts, i), file, base))
        if not jobs:
            return results
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.file_download_timeout_seconds
        gate = asyncio.Semaphore(MAX_PARALLEL)
        async with contextlib.AsyncExitStack() as stack:
            session = self.slack.client.session
            if not isinstance(session, aiohttp.ClientSession) or session.closed:
                session = await stack.enter_async_context(aiohttp.ClientSession())
            fetched = await asyncio.gather(
                *(
                    self._fetch(session, file, base, team_id, deadline, gate)
                    for _, file, base in jobs
                )
            )
        for (key, _, _), attachment in zip(jobs, fetched, strict=True):
            results[key] = attachment
        return results

    async def _fetch(
        self,
        session: aiohttp.ClientSession,
        file: Mapping[str, Any],
        base: Attachment,
        team_id: str,
        deadline: float,
        gate: asyncio.Semaphore,
    ) -> Attachment:
        key = f"{team_id}:{base.file_id}"
        cached = await self._cached(key, file, base)
        if cached is not None:
            return cached
        try:
            async with asyncio.timeout_at(deadline), gate:
                data, complete = await self._download(session, file, base)
                prepared = await asyncio.to_thread(
                    prepare, base, data, complete, self.settings.max_file_text_chars
                )
        except Refused as e:
            self.log.warning(
                "file not downloaded",
                extra={"file_id": base.file_id, "reason": e.reason, "detail": e.detail},
            )
            return base.left_out(e.reason)
        except TimeoutError:
            self.log.warning("file download timed out", extra={"file_id": base.file_id})
            return base.left_out("download timed out")
        except (aiohttp.ClientError, OSError) as e:
            self.log.warning(
                "file download failed",
                extra={"file_id": base.file_id, "error": type(e).__name__},
            )
            return base.left_out("download failed")
        with contextlib.suppress(StoreError):
            entry = {**asdict(prepared), "v": CACHE_VERSION, "size": _size(file)}
            entry["chars"] = self.settings.max_file_text_chars
            await self.store.put_file(key, entry, self.settings.file_cache_seconds)
        return prepared

    async def _cached(
        self, key: str, file: Mapping[str, Any], base: Attachment
    ) -> Attachment | None:
        try:
            entry = await self.store.get_file(key)
        except StoreError:
            return None
        if (
            entry is None
            or entry.get("v") != CACHE_VERSION
            or entry.get("size") != _size(file)
            or entry.get("chars") != self.settings.max_file_text_chars
        ):
            return None
        block = entry.get("block")
        if isinstance(block, dict) and "title" in block:
            block = {**block, "title": base.name}  # the file may have been renamed since
        return Attachment(
            file_id=base.file_id,
            name=base.name,
            kind=Kind(entry.get("kind", base.kind)),
            block=block if isinstance(block, dict) else None,
            tokens=int(entry.get("tokens") or 0),
            sent_bytes=int(entry.get("sent_bytes") or 0),
            pages=int(entry.get("pages") or 0),
            reason=str(entry.get("reason") or ""),
        )

    async def _described(self, file: Mapping[str, Any], n: int) -> Mapping[str, Any] | Refused:
        """The file object as Slack describes it: some events and messages carry a stub
        (Slack Connect files say `file_access: check_file_info`), which `files.info`
        completes (for the `n`th file in order of priority, while it could still be read)."""
        if file.get("file_access") != "check_file_info":
            return file
        if n >= 2 * MAX_FILES:
            return Refused(f"more than {MAX_FILES} files in the thread")
        try:
            data = await self.slack.call("files.info", file=str(file.get("id") or ""))
        except SlackFailure as e:
            self.log.warning(
                "files.info failed", extra={"file_id": file.get("id"), "error": e.error}
            )
            return Refused("Slack would not share it")
        described = data.get("file")
        return described if isinstance(described, Mapping) else Refused("Slack would not share it")

    async def _download(
        self, session: aiohttp.ClientSession, file: Mapping[str, Any], base: Attachment
    ) -> tuple[bytes, bool]:
        """The file's bytes and whether they are all of it (a text file is read only as far
        as its character limit needs)."""
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        if not url:
            raise Refused("no download link from Slack")
        limit = self.settings.max_file_bytes
        read_limit = limit
        if base.kind is Kind.TEXT:  # UTF-8 takes at most 4 bytes a character
            read_limit = min(limit, 4 * self.settings.max_file_text_chars + 4)
        token = str(self.slack.client.token or "")
        for _ in range(MAX_REDIRECTS + 1):
            where = origin(url)
            if where not in self.hosts:
                host = where[1] if where else "an unknown place"
                raise Refused("not on Slack's file host", f"host {host}: the token is not sent")
            async with session.get(
                url,
                headers={"Authorization": f"Bearer {token}"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None),  # the answer's deadline bounds it
            ) as response:
                if response.status in _REDIRECTS and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status != 200:
                    raise Refused("Slack refused the download", f"HTTP {response.status}")
                if response.content_type == "text/html" and "html" not in str(
                    file.get("mimetype") or ""
                ):
                    raise Refused(
                        "Slack refused the download", "a sign-in page: is files:read granted?"
                    )
                if (response.content_length or 0) > limit:
                    raise Refused(f"over the {megabytes(limit)} limit")
                return await _read(response, read_limit, limit, partial=base.kind is Kind.TEXT)
        raise Refused("Slack refused the download", "too many redirects")


async def _read(
    response: aiohttp.ClientResponse, read_limit: int, limit: int, *, partial: bool
) -> tuple[bytes, bool]:
    """At most `read_limit` bytes; more than that is either the start of a longer file
    (`partial`) or a file over the limit."""
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.content.iter_chunked(CHUNK):
        chunks.append(chunk)
        received += len(chunk)
        if received > read_limit:
            if not partial:
                raise Refused(f"over the {megabytes(limit)} limit")
            return b"".join(chunks)[:read_limit], False
    return b"".join(chunks), True


def prepare(base: Attachment, data: bytes, complete: bool, text_chars: int) -> Attachment:
    """A downloaded file as its Claude block, or left out with the reason (CPU: a worker
    thread runs it)."""
    if base.kind is Kind.IMAGE:
        try:
            image = prepare_image(data)
        except ImageError as e:
            return base.left_out(f"an image that {e}")
        block = att.image_block(image.media_type, image.data)
        return _sent(base, block, image.tokens)
    if base.kind is Kind.PDF:
        problem = att.pdf_problem(data)
        if problem is not None:
            return base.left_out(problem)
        pages = att.pdf_pages(data) or att.estimated_pdf_pages(len(data))
        if pages > att.MAX_PDF_PAGES:
            return base.left_out(f"{pages} pages, over Claude's {att.MAX_PDF_PAGES}")
        block = att.pdf_block(data, base.name)
        return _sent(base, block, att.pdf_tokens(pages), pages=pages)
    text = att.decode_text(data, complete=complete)
    if text is None:
        return base.left_out("not text")
    shown, cut = att.cut_text(text, text_chars, more=not complete)
    # The conversation's own estimate, and the document's framing.
    sent = _sent(base, att.text_block(shown, base.name), estimate_tokens(shown) + 20)
    return replace(sent, reason=f"cut to {text_chars:,} characters") if cut else sent


def _sent(base: Attachment, block: att.Block, tokens: int, *, pages: int = 0) -> Attachment:
    return Attachment(
        base.file_id,
        base.name,
        base.kind,
        block=block,
        tokens=tokens,
        sent_bytes=att.block_data_length(block),
        pages=pages,
    )


def _within_request(
    chosen: list[tuple[str, int, Mapping[str, Any]]],
    results: dict[tuple[str, int], Attachment],
) -> dict[tuple[str, int], Attachment]:
    """Claude's per-request limits (images, PDF pages, size), in the same order of priority."""
    images = pages = sent = 0
    out = dict(results)
    for ts, i, _ in chosen:
        a = out[ts, i]
        if not a.sent:
            continue
        if a.kind is Kind.IMAGE and images >= att.MAX_IMAGES:
            out[ts, i] = a.left_out(f"more than {att.MAX_IMAGES} images")
        elif a.pages and pages + a.pages > att.MAX_PDF_PAGES:
            out[ts, i] = a.left_out(f"over Claude's {att.MAX_PDF_PAGES} PDF pages per request")
        elif sent + a.sent_bytes > att.MAX_REQUEST_FILE_BYTES:
            out[ts, i] = a.left_out("over Claude's request size")
        else:
            images += a.kind is Kind.IMAGE
            pages += a.pages
            sent += a.sent_bytes
    return out


def _size(file: Mapping[str, Any]) -> int:
    size = file.get("size")
    return size if isinstance(size, int) and size > 0 else 0


def _newest_first(ts: str) -> tuple[int, int]:
    seconds, micros = ts_key(ts)
    return -seconds, -micros
