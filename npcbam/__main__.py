"""``python -m npcbam``: the same as the ``npcbam`` command."""

import sys

from npcbam.cli import main

sys.exit(main())
