"""The tests' names for the simulator rig, `bot/sim/rig.py`, which the benchmarks and the demo
share: simulators with the standard workspace, a running bot and its `Harness`.

`settings_for` is `sim_settings` with the tests' timings (`fast=True`, its default).
"""

from __future__ import annotations

from bot.sim.rig import (
    ADMIN,
    ALICE,
    BOB,
    CHANNEL,
    DM,
    SECRET,
    TEAM,
    Harness,
    is_finished,
    running_bot,
    simulators,
)
from bot.sim.rig import sim_settings as settings_for

__all__ = [
    "ADMIN",
    "ALICE",
    "BOB",
    "CHANNEL",
    "DM",
    "SECRET",
    "TEAM",
    "Harness",
    "is_finished",
    "running_bot",
    "settings_for",
    "simulators",
]
