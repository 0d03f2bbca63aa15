"""``python -m taskrunner``: the command line (see :mod:`taskrunner.cli.main`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The ``taskrunner`` console script; returns the exit code."""
    from taskrunner.cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
