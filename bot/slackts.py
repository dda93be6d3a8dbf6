"""Slack message timestamps ("seconds.micros" strings): the one place that reads them.

A ts names a message and orders a channel's messages. Its fraction is microseconds, so "1.5"
is 1.500000 and sorts after "1.000009". A string that is not a ts orders nothing.
"""

from __future__ import annotations


def parse(ts: str) -> tuple[int, int] | None:
    """(seconds, microseconds) of a ts, or None when `ts` is not one."""
    seconds, _, fraction = ts.partition(".")
    if not (seconds.isascii() and seconds.isdigit()):
        return None
    if fraction and not (fraction.isascii() and fraction.isdigit() and len(fraction) <= 6):
        return None
    return int(seconds), int(fraction.ljust(6, "0")) if fraction else 0


def ts_key(ts: str) -> tuple[int, int]:
    """A sort key; a malformed ts sorts first."""
    return parse(ts) or (-1, 0)


def ts_before(a: str, b: str) -> bool:
    """Whether message `a` is older than `b`; False when either is not a ts."""
    first, second = parse(a), parse(b)
    return first is not None and second is not None and first < second


def as_number(ts: str) -> float | None:
    """The ts as a number that sorts as the ts does (a double keeps every microsecond of a
    Slack ts distinct until the year 2106), or None when it is not one."""
    parsed = parse(ts)
    return None if parsed is None else parsed[0] + parsed[1] / 1_000_000
