"""Entry point of ``python -m calibration``."""

import sys

from .cli import main

sys.exit(main())
