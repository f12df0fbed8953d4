#!/usr/bin/env python3
"""Scaffold a capforge workspace, from any current directory.

    python New_work.py works weibo --mode CTC

is the same as ``capforge new works weibo --mode CTC``; --help lists the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from capforge.cli import main  # noqa: E402  (the path above makes capforge importable)

if __name__ == "__main__":
    raise SystemExit(main(["new", *sys.argv[1:]]))
