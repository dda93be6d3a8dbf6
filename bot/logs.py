"""Logging: one event per line (JSON for machines, text for terminals), secrets never printed.

Secrets are masked in the *formatted* line, after every argument and extra field has been
rendered, so a token can't slip through an exception message, a repr or a third-party logger.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

# Shapes of credentials, masked even when they are not ours (e.g. pasted into an error message),
# and the user:password part of a Redis URL, however short the password.
_SECRET_SHAPES = re.compile(
    r"(xox[abposr]-[A-Za-z0-9-]{6,}|xapp-[A-Za-z0-9-]{6,}|sk-ant-[A-Za-z0-9_-]{6,}"
    r"|(?<=rediss://)[^\s/@]+(?=@)|(?<=redis://)[^\s/@]+(?=@)|(?<=unix://)[^\s/@]+(?=@))"
)
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
MASK = "[redacted]"


class Redactor:
    """Masks the configured secret values and anything shaped like a Slack or Anthropic key."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return _SECRET_SHAPES.sub(MASK, text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return self.redact(line)


def configure_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Route every logger (ours, Bolt's, the SDKs') through one redacting handler on stderr."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The HTTP clients log request lines (with headers at DEBUG); keep them at WARNING.
    for noisy in ("httpx2", "httpcore", "anthropic", "slack_sdk", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class ContextLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that adds a fixed context (e.g. the answer id) to every line's own extras.

    The standard adapter replaces a call's `extra` with its own; this one merges them, so a line
    carries both the correlation id and what the call site adds.
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs
