"""Remove the shared memory and lock files that a killed Streaming run left behind.

    python clean_shared_memory.py [--dry-run]

Safe while other runs are alive on this machine: only segments no live process maps are removed. Training runs
the same cleanup at start-up, so this is for manual use.
"""
from __future__ import annotations

import sys

from core.cli import ScriptParser
from loaders.shm import clean_stale_shared_memory, stale_prefixes


def main(argv: list[str]) -> int:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        segments, locks = stale_prefixes()
        stale = [str(p) for paths in [*segments.values(), *locks.values()] for p in paths]
        print("\n".join(stale) if stale else "nothing stale")
        return 0
    removed = clean_stale_shared_memory()
    print(f"removed {len(removed)} stale item(s)" + "".join(f"\n  {r}" for r in removed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
