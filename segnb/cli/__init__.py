"""The ``segnb`` command line: ``segnb demo``, ``train``, ``sweep``, ``eval``, ``export``, ``datasets show``, ``lab``,
``studio``, ``lessons``.

``parser`` holds the commands and the checks on their values, ``commands`` the training and
evaluation commands, ``servers`` JupyterLab and the Voila Studio.
"""

from __future__ import annotations

import sys

from segnb.cli.parser import build_parser
from segnb.cli.servers import STUDIO_SHAPES

__all__ = ["STUDIO_SHAPES", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from segnb.errors import SegnbError

    try:
        return args.run(args)
    except SegnbError as err:
        print(f"segnb: {err}", file=sys.stderr)
        return 2
