"""``python -m prompting.cli``: the command line."""

import sys

from prompting.cli import main

sys.exit(main())
