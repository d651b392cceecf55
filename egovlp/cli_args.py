"""The argument parser every `egovlp` command builds: a bad flag is one line, exit 2.

argparse's own `error` prints the whole usage block before the message; on a command with twenty
flags the line that names the bad one scrolls away. `OneLineParser` prints only that line and points
to `--help`. Sub-commands inherit it (`add_subparsers` makes parsers of the parent's class).
"""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["OneLineParser"]


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one stderr line naming the flag, then exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")
