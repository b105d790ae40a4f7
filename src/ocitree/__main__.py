"""``python -m ocitree``."""

import sys

from ocitree.cli.main import main

sys.exit(main())
