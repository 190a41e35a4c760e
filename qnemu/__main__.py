"""`python -m qnemu ...`: the CLI. Process roles start without importing the CLI's
terminal UI, so that a 32-process network starts fast and each process stays small."""

import sys

if len(sys.argv) > 1 and sys.argv[1] in ("broker", "station", "node"):
    from qnemu.launch.processes import main

    sys.exit(main(sys.argv[1:]))

from qnemu.cli import main

sys.exit(main())
