"""Make sure capforge's requirements can be imported, using the repository's .venv if needed.

Standard library only: it runs before anything else is importable.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
VENV_PYTHON = VENV / "bin" / "python"


def ensure_requirements() -> None:
    """Re-run the current command under ``.venv`` when this Python lacks the requirements."""
    try:
        import numpy  # noqa: F401
        import PIL  # noqa: F401
        import tqdm  # noqa: F401
    except ModuleNotFoundError as exc:
        if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV.resolve():
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
        sys.stderr.write(
            f"error: capforge needs {exc.name!r}, which {sys.executable} does not have.\n"
            f"Run {REPO}/run test (it creates {REPO}/.venv), or: pip install -r "
            f"{REPO}/requirements.txt\n")
        raise SystemExit(2) from None
