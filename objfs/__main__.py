"""``python -m objfs``: the same command line as the ``objfs`` console script."""

import sys

from objfs.cli import main

sys.exit(main())
