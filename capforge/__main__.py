"""``python -m capforge`` is the ``capforge`` console script."""

from capforge.cli import main

raise SystemExit(main())
