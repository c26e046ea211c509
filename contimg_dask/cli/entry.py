"""The ``contimg`` executable (``[project.scripts]``): SIGINT and SIGTERM are handled as
interrupts (exit 130, one line) before the command's modules are imported, so a command
stopped while Python still imports them (a second or more on a loaded machine) ends like
one stopped later, not with a traceback (SIGINT) or killed without a word (SIGTERM)."""

from __future__ import annotations

import sys

from contimg_dask.cli.outcome import run


def _command() -> int:
    from contimg_dask.cli.main import main

    return main()


def main() -> int:
    """Run ``contimg`` with the arguments of this process; its exit code."""
    return run(_command)


if __name__ == "__main__":
    sys.exit(main())
