import sys

from qnemu.cli import main

sys.exit(main())
