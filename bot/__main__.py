"""`python -m bot ...` is the same as the `slackstream` command."""

import sys

from bot.cli import main

sys.exit(main())
