"""`python -m shared.cli`: the `distill` command."""

import sys

from shared.cli import main

sys.exit(main())
