"""``python -m runtime``: the same command line as the ``fourpp-eusr`` script."""

import sys

from .cli import main

sys.exit(main())
