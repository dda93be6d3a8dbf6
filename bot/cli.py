"""The commands of the operating contract: serve, socket, demo, check, manifest."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging


def _settings_for(mode: str) -> Settings:
    settings = load_settings()
    settings.require(mode)  # type: ignore[arg-type]
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    return settings


def _serve(mode: str) -> int:
    from bot.app import SlackStream, serve, serve_socket_mode

    settings = _settings_for(mode)
    bot = SlackStream(settings)
    asyncio.run(serve(bot) if mode == "serve" else serve_socket_mode(bot))
    return 0


def _check() -> int:
    from bot.check import run_check

    settings = load_settings()
    configure_logging("ERROR", "text", settings.secret_values())
    return int(asyncio.run(run_check(settings)))


def _manifest(url: str | None, socket: bool) -> int:
    from bot.manifest import build_manifest, dump_manifest

    if not socket and not url:
        raise ConfigError("--url is required for HTTP mode (or pass --socket).")
    sys.stdout.write(dump_manifest(build_manifest(url=url, socket=socket)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slackstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="HTTP mode: Slack events, /healthz, /readyz, /metrics")
    sub.add_parser("socket", help="Socket Mode (needs SLACK_APP_TOKEN)")
    demo = sub.add_parser("demo", help="the whole pipeline offline, no credentials")
    demo.add_argument("question", nargs="?", help="what to ask the simulated Claude")
    sub.add_parser("check", help="check configuration and connectivity")
    manifest = sub.add_parser("manifest", help="print a ready Slack app manifest")
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
        return _manifest(args.url, args.socket)
    except ConfigError as e:
        print(f"slackstream: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
