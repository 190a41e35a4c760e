"""`python -m qnemu.app RUN_DIR_OR_TOPOLOGY alice=app_a.py bob=app_b.py [--arg k=v] [--json]`."""

import sys

from qnemu.app.cli import main

sys.exit(main())
