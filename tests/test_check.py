"""`slackstream check` reports each problem with a fix, and exits non-zero when any check fails."""

from __future__ import annotations

import io

from bot.check import run_check
from bot.manifest import BOT_SCOPES
from bot.sim.claude import ClaudeSim
from bot.sim.redis import free_port
from bot.sim.slack import SlackSim
from tests.harness import settings_for


async def test_all_green_against_simulators_and_redis(redis_url: str) -> None:
    async with SlackSim(scopes=list(BOT_SCOPES)) as slack, ClaudeSim() as claude:
        out = io.StringIO()
        code = await run_check(settings_for(slack, claude, redis_url=redis_url), out)
    report = out.getvalue()
    assert code == 0, report
    assert "[ok  ] Slack auth.test" in report
    assert "[ok  ] bot scopes: all declared scopes granted" in report
    assert "[ok  ] Redis: PING answered" in report
    assert "[ok  ] Claude" in report


async def test_missing_scope_bad_token_and_unreachable_redis_are_reported() -> None:
    scopes = [s for s in BOT_SCOPES if s != "users:read"]
    async with SlackSim(scopes=scopes) as slack, ClaudeSim() as claude:
        out = io.StringIO()
        settings = settings_for(slack, claude, redis_url=f"redis://127.0.0.1:{free_port()}/0")
        code = await run_check(settings, out)
        bad_token = io.StringIO()
        bad_code = await run_check(
            settings_for(slack, claude, slack_bot_token="xoxb-wrong"), bad_token
        )
    report = out.getvalue()
    assert code == 1
    assert "[FAIL] bot scopes: missing: users:read" in report
    assert "[FAIL] Redis" in report and "fix: check REDIS_URL" in report
    assert bad_code == 1
    assert "Slack answered invalid_auth" in bad_token.getvalue()
    assert "xoxb-wrong" not in bad_token.getvalue()


async def test_missing_configuration_names_the_variables() -> None:
    async with SlackSim() as slack, ClaudeSim() as claude:
        out = io.StringIO()
        code = await run_check(
            settings_for(slack, claude, slack_bot_token=None, anthropic_api_key=None), out
        )
    report = out.getvalue()
    assert code == 1
    assert "SLACK_BOT_TOKEN set: not set" in report
    assert "export ANTHROPIC_API_KEY" in report


async def test_a_missing_files_read_scope_is_reported_with_what_it_costs() -> None:
    """Files in threads: downloads need files:read, which the manifest declares."""
    assert "files:read" in BOT_SCOPES
    scopes = [s for s in BOT_SCOPES if s != "files:read"]
    async with SlackSim(scopes=scopes) as slack, ClaudeSim() as claude:
        out = io.StringIO()
        code = await run_check(settings_for(slack, claude), out)
    report = out.getvalue()
    assert code == 1
    assert (
        "[FAIL] bot scopes: missing: files:read (without files:read, no file in a thread "
        "reaches Claude)" in report
    )
