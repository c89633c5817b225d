"""What the command-line scripts share."""
from __future__ import annotations

import argparse
import sys


class ScriptParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error:`` line and exit 2, like every other bad input."""

    def error(self, message: str) -> None:
        print(f"error: {message}; see --help", file=sys.stderr)
        sys.exit(2)
