"""``python -m segnb.cli``: the ``segnb`` command."""

import sys

from segnb.cli import main

sys.exit(main())
