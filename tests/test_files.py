"""Files in the thread reach Claude with the message they belong to, through real wires: the
real slack-sdk, aiohttp and Anthropic clients against the simulated Slack (which serves the
files with Slack's auth rule) and the simulated Claude (which checks the blocks' shapes).

Checked from both ends: what Claude was sent (`claude.requests`), what the file host served
and to whom (`slack.files.requests`, a foreign server's own log), and what the reader sees."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp import web
from PIL import Image

from bot.conversation import OVER_BUDGET
from bot.demo import run_demo
from bot.imaging import MAX_EDGE
from bot.manifest import BOT_SCOPES
from bot.sim import samples
from bot.sim.claude import ClaudeSim, Script
from bot.sim.slack import SimMessage, SlackSim
from bot.store import MemoryStore
from tests.harness import ALICE, BOB, CHANNEL, Harness, is_finished, running_bot, simulators


def sent_blocks(claude: ClaudeSim, request: int = -1) -> list[dict[str, Any]]:
    """Every block of a request, in order, with which message (by index) it is in."""
    return [
        {**block, "_message": i}
        for i, message in enumerate(claude.requests[request]["messages"])
        for block in message["content"]
    ]


def media(claude: ClaudeSim, request: int = -1) -> list[dict[str, Any]]:
    return [b for b in sent_blocks(claude, request) if b["type"] in ("image", "document")]


def decoded(block: dict[str, Any]) -> bytes:
    return base64.b64decode(block["source"]["data"])


def texts(claude: ClaudeSim, request: int = -1) -> str:
    return "\n".join(b["text"] for b in sent_blocks(claude, request) if b["type"] == "text")


def downloads(slack: SlackSim, file: dict[str, Any]) -> list[Any]:
    return [r for r in slack.files.requests if f"-{file['id']}/" in r.path]


async def answers(h: Harness, root: SimMessage, count: int) -> list[SimMessage]:
    """The thread's first `count` answers, once all of them are finished."""

    def done() -> bool:
        replies = h.replies(root)
        return len(replies) >= count and all(is_finished(r) for r in replies)

    await h.slack.wait_for(done)
    return h.replies(root)


@asynccontextmanager
async def foreign_host() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """Another server on loopback that logs every request it gets, headers included."""
    log: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        log.append({"path": request.path, "headers": dict(request.headers)})
        return web.Response(body=samples.image(64, 64), content_type="image/png")

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        await runner.cleanup()


# -- images -----------------------------------------------------------------------------------


async def test_an_image_in_the_question_reaches_claude_as_an_image_block() -> None:
    png = samples.image(640, 480, "PNG")
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        file = slack.files.upload("diagram.png", png, mimetype="image/png")
        asked = await h.mention("what does this diagram show?", files=[file])
        [reply] = await h.finished(asked)
    [block] = media(claude)
    assert block["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(png).decode(),
    }  # within Claude's limits: sent as it is
    assert "what does this diagram show?\n[attached: diagram.png]" in texts(claude)
    # Downloaded once, from Slack's file host, with the bot token.
    [download] = downloads(slack, file)
    assert download.authorization == f"Bearer {slack.bot_token}" and download.status == 200
    assert "/download/" in download.path
    assert "Not read" not in reply.visible_text()
    assert "Tokens:" in reply.visible_text()


async def test_a_large_photo_is_scaled_down_before_it_is_sent() -> None:
    photo = samples.photo(4032, 3024)  # a 12-megapixel phone photo, about 5 MB
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        file = slack.files.upload("IMG_0042.JPG", photo, mimetype="image/jpeg")
        asked = await h.mention("is this the right part?", files=[file])
        await h.finished(asked)
    [block] = media(claude)
    assert block["source"]["media_type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(decoded(block)))
    assert picture.size == (MAX_EDGE, 1176)  # long edge 1,568 px, aspect ratio kept
    assert len(block["source"]["data"]) < len(photo) / 5


async def test_a_large_transparent_image_stays_png() -> None:
    art = samples.image(2400, 1200, "PNG", transparent=True)
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        file = slack.files.upload("logo.png", art, mimetype="image/png")
        await h.finished(await h.mention("is the logo centred?", files=[file]))
    [block] = media(claude)
    picture = Image.open(io.BytesIO(decoded(block)))
    assert (block["source"]["media_type"], picture.mode, picture.size) == (
        "image/png",
        "RGBA",
        (MAX_EDGE, 784),
    )


async def test_an_image_that_cannot_be_decoded_is_skipped_with_a_note() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        broken = slack.files.upload(
            "broken.png", b"\x89PNG\r\n\x1a\n garbage", mimetype="image/png"
        )
        fine = slack.files.upload("fine.png", samples.image(100, 100), mimetype="image/png")
        [reply] = await h.finished(await h.mention("compare", files=[broken, fine]))
    assert [b["type"] for b in media(claude)] == ["image"]
    assert "[attached: broken.png (an image that cannot be decoded), fine.png]" in texts(claude)
    text = reply.visible_text()
    assert "_Not read: `broken.png` (an image that cannot be decoded)._" in text
    assert text.index("Not read") < text.index("Tokens:")  # before the footer


# -- PDFs and text ----------------------------------------------------------------------------


async def test_a_pdf_goes_as_a_base64_document_with_its_name() -> None:
    pdf = samples.pdf(3)
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        file = slack.files.upload("Q3 report.pdf", pdf, mimetype="application/pdf")
        [reply] = await h.finished(await h.mention("summarise", files=[file]))
    [block] = media(claude)
    assert block["type"] == "document" and block["title"] == "Q3 report.pdf"
    assert block["source"]["media_type"] == "application/pdf" and decoded(block) == pdf
    assert "Not read" not in reply.visible_text()


async def test_text_like_files_go_as_text_documents_cut_to_size_with_a_note() -> None:
    files = {
        "notes.md": ("# Plan\n\n- ship it\n", "text/markdown"),
        "data.csv": ("a,b\n1,2\n", "text/csv"),
        "config.yaml": ("retries: 3\n", "application/x-yaml"),
        "events.json": ('{"ok": true}', "application/json"),
        "worker.py": ("print('hi')\n", "application/octet-stream"),  # by its extension
        "server.log": ("line\n" * 1000, "text/plain"),  # 5,000 characters
    }
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, max_file_text_chars=1000) as h:
            uploaded = [
                slack.files.upload(name, text.encode(), mimetype=mime)
                for name, (text, mime) in files.items()
            ]
            [reply] = await h.finished(await h.mention("any problems?", files=uploaded))
    blocks = media(claude)
    assert [b["title"] for b in blocks] == list(files)
    assert all(b["source"]["type"] == "text" for b in blocks)
    assert all(b["source"]["media_type"] == "text/plain" for b in blocks)
    assert blocks[0]["source"]["data"] == "# Plan\n\n- ship it\n"
    log = blocks[-1]["source"]["data"]
    assert log.startswith("line\n" * 200) and log.endswith(
        "[… cut here: only the first 1,000 characters are shown …]"
    )
    assert "server.log (cut to 1,000 characters)" in texts(claude)
    assert "Read in part: `server.log` (cut to 1,000 characters)." in reply.visible_text()


async def test_other_files_are_not_sent_and_one_closing_line_names_them() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        video = slack.files.upload("demo.mp4", b"\x00\x00\x00 ftypmp4", mimetype="video/mp4")
        archive = slack.files.upload("logs.zip", b"PK\x03\x04", mimetype="application/zip")
        sheet = slack.files.upload(
            "budget.xlsx",
            b"PK\x03\x04",
            mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
        [reply] = await h.finished(await h.mention("thoughts?", files=[video, archive, sheet]))
    assert media(claude) == []
    assert slack.files.requests == []  # nothing downloaded that would not be sent
    assert (
        "[attached: demo.mp4 (a video), logs.zip (an archive), budget.xlsx (an Office document)]"
        in texts(claude)
    )
    closing = [line for line in reply.visible_text().splitlines() if "Not read" in line]
    assert closing == [
        "_Not read: `demo.mp4` (a video), `logs.zip` (an archive), "
        "`budget.xlsx` (an Office document)._"
    ]


# -- limits -----------------------------------------------------------------------------------


async def test_a_file_over_the_size_limit_is_left_out_without_a_download() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, max_file_bytes=50_000) as h:
            big = slack.files.upload(
                "big.pdf", samples.pdf(1, size=200_000), mimetype="application/pdf"
            )
            small = slack.files.upload("small.png", samples.image(50, 50), mimetype="image/png")
            [reply] = await h.finished(await h.mention("read these", files=[big, small]))
    assert downloads(slack, big) == [] and len(downloads(slack, small)) == 1
    assert [b["type"] for b in media(claude)] == ["image"]
    assert "`big.pdf` (over the 0.05 MB limit)" in reply.visible_text()


async def test_a_file_larger_than_its_stated_size_is_never_half_sent() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, max_file_bytes=100_000) as h:
            file = slack.files.upload(
                "doc.pdf", samples.pdf(1, size=300_000), mimetype="application/pdf"
            )
            file["size"] = 1_000  # the event understates it: the download itself is bounded
            [reply] = await h.finished(await h.mention("read it", files=[file]))
    assert media(claude) == []
    assert "`doc.pdf` (over the 0.1 MB limit)" in reply.visible_text()


async def test_the_files_of_one_answer_share_a_total_and_the_questions_come_first() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, max_files_total_bytes=150_000) as h:
            older = slack.files.upload("older.pdf", samples.pdf(1, size=100_000))
            root = slack.post_user_message(CHANNEL, "the spec", user=BOB, files=[older])
            newer = slack.files.upload("newer.pdf", samples.pdf(1, size=100_000))
            asked = await h.mention("does it match?", thread_ts=root.ts, files=[newer])
            [reply] = await h.finished(asked)
    [block] = media(claude)
    assert block["title"] == "newer.pdf"
    assert downloads(slack, older) == []
    assert "`older.pdf` (over the 0.15 MB per answer)" in reply.visible_text()


async def test_a_download_that_takes_too_long_is_left_out_and_the_answer_goes_on() -> None:
    async with simulators() as (slack, claude):
        slack.files.transfer_bytes_per_second = 10_000  # 200 kB: 20 s
        async with running_bot(slack, claude, file_download_timeout_seconds=0.5) as h:
            slow = slack.files.upload("scan.pdf", samples.pdf(1, size=200_000))
            [reply] = await h.finished(await h.mention("read this", files=[slow]))
    assert media(claude) == []
    assert "`scan.pdf` (download timed out)" in reply.visible_text()
    assert "Tokens:" in reply.visible_text()


# -- the token rule ---------------------------------------------------------------------------


async def test_a_file_on_a_foreign_host_is_not_downloaded_with_the_token() -> None:
    async with foreign_host() as (foreign, log), simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            file = slack.files.upload("chart.png", samples.image(80, 80), mimetype="image/png")
            file["url_private"] = f"{foreign}/files-pri/T0001-{file['id']}/chart.png"
            file["url_private_download"] = file["url_private"] + "?download"
            [reply] = await h.finished(await h.mention("see chart", files=[file]))
    assert log == []  # the foreign server was never asked: no token, no request at all
    assert slack.files.requests == []
    assert media(claude) == []
    assert "`chart.png` (not on Slack's file host)" in reply.visible_text()


async def test_a_redirect_off_slacks_file_host_is_not_followed() -> None:
    async with foreign_host() as (foreign, log), simulators() as (slack, claude):
        async with running_bot(slack, claude) as h:
            file = slack.files.upload("chart.png", samples.image(80, 80), mimetype="image/png")
            slack.files.redirects[file["id"]] = f"{foreign}/stolen"
            [reply] = await h.finished(await h.mention("see chart", files=[file]))
    assert [r.status for r in downloads(slack, file)] == [302]
    assert log == []
    assert "`chart.png` (not on Slack's file host)" in reply.visible_text()


async def test_without_files_read_slack_answers_with_its_sign_in_page() -> None:
    scopes = [s for s in BOT_SCOPES if s != "files:read"]
    async with simulators(scopes=scopes) as (slack, claude), running_bot(slack, claude) as h:
        file = slack.files.upload("chart.png", samples.image(80, 80), mimetype="image/png")
        [reply] = await h.finished(await h.mention("see chart", files=[file]))
    assert media(claude) == []
    assert "`chart.png` (Slack refused the download)" in reply.visible_text()


async def test_the_simulated_file_host_follows_slacks_auth_rule() -> None:
    async with SlackSim() as slack, aiohttp.ClientSession() as http:
        file = slack.files.upload("a.txt", b"secret plan", mimetype="text/plain")
        url = file["url_private_download"]
        async with http.get(url, allow_redirects=False) as anonymous:
            assert anonymous.status == 302
            assert anonymous.headers["Location"].startswith("/signin?redir=")
        async with http.get(url) as followed:
            assert followed.content_type == "text/html" and "Sign in" in await followed.text()
        wrong = {"Authorization": "Bearer xoxb-someone-else"}
        async with http.get(url, headers=wrong) as other:
            assert other.status == 403
        bot = {"Authorization": f"Bearer {slack.bot_token}"}
        async with http.get(url, headers=bot) as ok:
            assert (ok.status, await ok.read()) == (200, b"secret plan")
            assert ok.headers["Content-Type"] == "text/plain"
    assert [r.status for r in slack.files.requests] == [302, 302, 403, 200]


# -- the thread, the cache and the rest -------------------------------------------------------


async def test_earlier_files_of_the_thread_go_with_their_messages_in_posting_order() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        first = slack.files.upload("before.png", samples.image(60, 40), mimetype="image/png")
        root = slack.post_user_message(CHANNEL, "here is the old layout", user=BOB, files=[first])
        spec = slack.files.upload("spec.md", b"# Spec\n", mimetype="text/markdown")
        slack.post_user_message(CHANNEL, "", user=ALICE, thread_ts=root.ts, files=[spec])
        after = slack.files.upload("after.png", samples.image(40, 60), mimetype="image/png")
        asked = await h.mention("what changed?", thread_ts=root.ts, files=[after])
        await h.finished(asked)
    blocks = sent_blocks(claude)
    order = [b.get("title") for b in blocks if b["type"] != "text"]
    assert [b["type"] for b in blocks] == ["text", "image", "text", "document", "text", "image"]
    assert order == [None, "spec.md", None]
    sizes = [Image.open(io.BytesIO(decoded(b))).size for b in blocks if b["type"] == "image"]
    assert sizes == [(60, 40), (40, 60)]


async def test_a_follow_up_question_uses_the_stored_copy_and_names_old_files_no_more() -> None:
    store = MemoryStore()
    async with simulators() as (slack, claude), running_bot(slack, claude, store=store) as h:
        photo = slack.files.upload("photo.jpg", samples.photo(2000, 1500), mimetype="image/jpeg")
        clip = slack.files.upload("clip.mov", b"\x00moov", mimetype="video/quicktime")
        asked = await h.mention("what is this?", files=[photo, clip])
        [first] = await h.finished(asked)
        await h.mention("and the colour?", thread_ts=asked.ts)
        replies = await answers(h, asked, 2)
    assert len(downloads(slack, photo)) == 1  # not downloaded again for the follow-up
    assert media(claude, 0) == media(claude, 1)  # the same bytes: the prompt cache still hits
    assert "`clip.mov` (a video)" in first.visible_text()
    # Claude is still told about the video; the reader is not told again.
    assert "clip.mov (a video)" in texts(claude, 1)
    assert "Not read" not in replies[-1].visible_text()


async def test_images_count_against_the_token_budget_and_the_questions_stay() -> None:
    async with simulators() as (slack, claude):
        async with running_bot(slack, claude, context_token_budget=1_000) as h:
            old = slack.files.upload("old.png", samples.image(800, 600), mimetype="image/png")
            root = slack.post_user_message(CHANNEL, "the old screen", user=BOB, files=[old])
            slack.post_user_message(CHANNEL, "any news?", user=BOB, thread_ts=root.ts)
            new = slack.files.upload("new.png", samples.image(800, 600), mimetype="image/png")
            asked = await h.mention("and now?", thread_ts=root.ts, files=[new])
            [reply] = await h.finished(asked)
    # 640 tokens an image (800 × 600 / 750): both do not fit in 1,000 with the text.
    [block] = media(claude)
    assert Image.open(io.BytesIO(decoded(block))).size == (800, 600)
    assert "and now?\n[attached: new.png]" in texts(claude)
    assert f"old.png ({OVER_BUDGET})" in texts(claude)  # the first message stays, its image not
    assert "1 earlier message left out" in reply.visible_text()
    # No answer in the thread has named it yet: this one does.
    assert f"_Not read: `old.png` ({OVER_BUDGET})._" in reply.visible_text()


async def test_a_file_stub_is_completed_with_files_info() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        stub = slack.files.upload(
            "shared.png", samples.image(30, 30), mimetype="image/png", access="check_file_info"
        )
        assert "url_private" not in stub
        await h.finished(await h.mention("from the other org", files=[stub]))
    assert [c.params["file"] for c in slack.calls_to("files.info")] == [stub["id"]]
    assert [b["type"] for b in media(claude)] == ["image"]


async def test_when_claude_cannot_read_a_file_the_question_is_answered_without_files() -> None:
    async with simulators() as (slack, claude), running_bot(slack, claude) as h:
        claude.enqueue(
            Script(
                text="Answered without the file.",
                http_error=(400, "invalid_request_error"),
                http_error_times=1,  # the first request is refused, the next one answered
            )
        )
        file = slack.files.upload("odd.pdf", samples.pdf(1), mimetype="application/pdf")
        [reply] = await h.finished(await h.mention("read it", files=[file]))
    assert len(claude.requests) == 2
    assert media(claude, 0) and media(claude, 1) == []
    assert "odd.pdf (Claude could not read it)" in texts(claude, 1)
    text = reply.visible_text()
    assert "Answered without the file." in text
    assert "`odd.pdf` (Claude could not read it)" in text


def b64_image(media_type: str, data: str, **extra: Any) -> dict[str, Any]:
    source = {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "image", "source": source, **extra}


async def test_the_simulated_claude_refuses_malformed_file_blocks() -> None:
    png = base64.b64encode(samples.image(10, 10)).decode()
    pdf_source = {"type": "base64", "media_type": "application/pdf", "data": png}
    text_source = {"type": "text", "media_type": "text/plain", "data": ""}
    bad_blocks = {
        "media type": b64_image("image/bmp", png),
        "mismatch": b64_image("image/jpeg", png),
        "base64": b64_image("image/png", "!!"),
        "pdf": {"type": "document", "source": pdf_source},
        "empty text": {"type": "document", "source": text_source},
        "extra field": b64_image("image/png", png, name="x.png"),
    }
    async with ClaudeSim() as sim:
        client = anthropic.AsyncAnthropic(api_key="sk-sim", base_url=sim.base_url, max_retries=0)
        for name, block in bad_blocks.items():
            content = [{"type": "text", "text": "see"}, block]
            with pytest.raises(anthropic.BadRequestError):
                await client.messages.create(
                    model="m", max_tokens=10, messages=[{"role": "user", "content": content}]
                )
            assert sim.requests == [], name
        good = b64_image("image/png", png)
        await client.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": [good]}]
        )
        await client.close()
    assert len(sim.requests) == 1


async def test_demo_attaches_a_sample_image_which_claude_gets_scaled_down() -> None:
    out = io.StringIO()
    final = await run_demo("What is in this picture? [sim:image]", out=out, chunk_delay=0.0)
    assert "(attached sample-photo.jpg: 3000×2000 px" in out.getvalue()
    assert "I was shown an image (image/jpeg, 1568×1045 px)." in final.visible_text()
    assert "Tokens:" in final.visible_text()
