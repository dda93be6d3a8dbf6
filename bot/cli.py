"""The commands of the operating contract: serve, socket, demo, check, usage, manifest; nothing
else."""

from __future__ import annotations

import argparse
import asyncio
import io
import sys

from bot.config import ConfigError, Settings, load_settings
from bot.logs import Redactor, configure_logging


def _settings_for(mode: str) -> Settings:
    settings = load_settings()
    settings.require(mode)  # type: ignore[arg-type]
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    return settings


def _serve(mode: str) -> int:
    from bot.app import SlackStream
    from bot.serving import serve, serve_socket_mode

    settings = _settings_for(mode)
    bot = SlackStream(settings)
    asyncio.run(serve(bot) if mode == "serve" else serve_socket_mode(bot))
    return 0


def _check() -> int:
    from bot.check import run_check

    settings = load_settings()
    configure_logging("ERROR", "text", settings.secret_values())
    # The checklist quotes what Slack, Claude and Redis answered: masked like a log line.
    report = io.StringIO()
    code = int(asyncio.run(run_check(settings, report)))
    sys.stdout.write(Redactor(settings.secret_values())(report.getvalue()))
    return code


def _manifest(url: str | None, socket: bool) -> int:
    from bot.manifest import build_manifest, dump_manifest

    if not socket and not url:
        raise ConfigError("--url is required for HTTP mode (or pass --socket).")
    try:
        manifest = build_manifest(url=url, socket=socket)
    except ValueError as e:
        raise ConfigError(f"--url: {e}") from None
    sys.stdout.write(dump_manifest(manifest))
    return 0


def _usage(args: argparse.Namespace) -> int:
    from bot.budgets import Calendar, time_zone
    from bot.report import parse_day, parse_groups, render, retention_warning, usage_report
    from bot.store import RedisStore, StoreError

    settings = load_settings()
    configure_logging("ERROR", "text", settings.secret_values())
    if not settings.redis_url:
        raise ConfigError(
            "usage reads the counters the bot keeps in Redis: set REDIS_URL (without it, "
            "each bot process keeps its usage in its own memory)."
        )
    try:
        by = parse_groups(args.by)
        since = parse_day(args.since, "--since") if args.since else None
        until = parse_day(args.until, "--until") if args.until else None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    calendar = Calendar(time_zone(settings.usage_timezone))

    async def report() -> list[dict[str, object]]:
        assert settings.redis_url is not None
        store = RedisStore.from_url(settings.redis_url)
        try:
            return await usage_report(
                store, calendar, since=since, until=until, by=by, team_id=args.team
            )
        finally:
            await store.close()

    try:
        rows = asyncio.run(report())
    except StoreError as e:
        print(f"slackstream: cannot read the usage from Redis: {e}", file=sys.stderr)
        return 1
    if (warning := retention_warning(since, calendar)) is not None:
        sys.stderr.write(warning)
    sys.stdout.write(Redactor(settings.secret_values())(render(rows, by, args.format)))
    return 0


# (name, one line for the command list, what `--help` says it does)
COMMANDS = {
    "serve": (
        "HTTP mode: Slack events, /healthz, /readyz, /metrics",
        "Run the bot in HTTP mode: one aiohttp server on HOST:PORT with POST /slack/events "
        "(Events API and interactivity, every request's signature verified), GET /healthz, "
        "GET /readyz and GET /metrics. Needs SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET and "
        "ANTHROPIC_API_KEY; REDIS_URL lets several replicas share the work. SIGTERM drains: "
        "answers in flight get SHUTDOWN_GRACE_SECONDS to finish.",
    ),
    "socket": (
        "Socket Mode (needs SLACK_APP_TOKEN)",
        "Run the bot in Socket Mode: events arrive over an outbound WebSocket, so no public URL "
        "is needed. Needs SLACK_BOT_TOKEN, SLACK_APP_TOKEN (xapp-, connections:write) and "
        "ANTHROPIC_API_KEY. /healthz, /readyz and /metrics are still served on HOST:PORT.",
    ),
    "demo": (
        "the whole pipeline offline, no credentials",
        "Answer one question end to end offline: a simulated Slack workspace and a simulated "
        "Claude on loopback, the real bot in between. The terminal shows the placeholder, "
        "each edit as Slack receives it, and the final message. Directives in the question "
        "steer the simulated Claude: [sim:long N], [sim:think], [sim:error], [sim:drop], "
        "[sim:stall], [sim:refuse], [sim:overloaded], [sim:fast]. Uses Redis when REDIS_URL "
        "is set.",
    ),
    "check": (
        "check configuration and connectivity",
        "Check the configuration and reach every dependency (Slack auth.test and the granted "
        "scopes, Claude, Redis); print a checklist with a fix for each problem. Exits 1 when "
        "anything needs fixing.",
    ),
    "usage": (
        "the usage report (answers, tokens, cost, feedback) for finance",
        "Print the usage every replica counted in Redis (REDIS_URL): one row per day and "
        "person, channel or model, with answers, input, output and cache tokens, server tool "
        "calls, the estimated cost in US dollars and the feedback votes. Days are those of "
        "USAGE_TIMEZONE; counters are kept 90 days. By default: this month so far, by person.",
    ),
    "manifest": (
        "print a ready Slack app manifest",
        "Print the Slack app manifest for this bot (scopes, events, interactivity) to paste "
        "into api.slack.com/apps > Create New App > From a manifest.",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="slackstream",
        description="A Slack bot that streams Claude's answers into its own message.",
        epilog="`slackstream COMMAND --help` says more about each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {
        name: sub.add_parser(name, help=summary, description=description)
        for name, (summary, description) in COMMANDS.items()
    }
    parsers["demo"].add_argument("question", nargs="?", help="what to ask the simulated Claude")
    usage = parsers["usage"]
    usage.add_argument("--since", metavar="DATE", help="first day (default: the 1st of this month)")
    usage.add_argument("--until", metavar="DATE", help="last day (default: today)")
    usage.add_argument(
        "--by", default="user", help="user, channel or model, or several: channel,model"
    )
    usage.add_argument("--format", choices=("table", "csv", "json"), default="table")
    usage.add_argument("--team", metavar="TEAM_ID", help="one workspace only")
    manifest = parsers["manifest"]
    manifest.add_argument("--url", help="public base URL, e.g. https://bot.example.com")
    manifest.add_argument("--socket", action="store_true", help="Socket Mode variant")
    args = parser.parse_args(argv)
    try:
        if args.command in ("serve", "socket"):
            return _serve(args.command)
        if args.command == "demo":
            from bot.demo import main as demo_main

            return demo_main(args.question)
        if args.command == "check":
            return _check()
        if args.command == "usage":
            return _usage(args)
        return _manifest(args.url, args.socket)
    except ConfigError as e:
        print(f"slackstream: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
