"""The workspace steps as Python functions, for notebooks and scripts::

    from capforge import workflow
    workflow.check("works/weibo").suggestions
    workflow.train("works/weibo", minutes=5, LR=0.001)

Each takes the workspace folder and setting overrides as keywords (what ``--set`` does), and
returns what its script prints a summary of. (They live here, not at ``capforge.train``: that
name is the training module's.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capforge.check import check as check_data
from capforge.pack import pack as pack_data
from capforge.split import split as split_data
from capforge.evaluate import evaluate as evaluate_model
from capforge.export import export as export_model
from capforge.settings import load_settings
from capforge.train import train as train_model
from capforge.workspace import Workspace, hook, open_workspace


def _opened(workspace: str | Path, overrides: dict[str, Any]) -> tuple[Workspace, Any]:
    ws = open_workspace(Path(workspace))
    return ws, load_settings(ws.root, [f"{name}={value!r}" for name, value in overrides.items()])


def check(workspace: str | Path, **overrides: Any) -> Any:
    """check_file.py: the data's problems, statistics and suggested settings (a Report)."""
    ws, settings = _opened(workspace, overrides)
    return check_data(ws, settings, hook(ws, "utils", "label_from_path"), hook(ws, "utils", "preprocess_image"))


def split(workspace: str | Path, **overrides: Any) -> Any:
    """split_dataset.py: data/pool into train, validation and test (the plan carried out)."""
    ws, settings = _opened(workspace, overrides)
    ws.init_layout()
    return split_data(ws, settings)


def pack(workspace: str | Path, **overrides: Any) -> dict[str, Any]:
    """pack_dataset.py: the splits as TFRecords; the pack manifest."""
    ws, settings = _opened(workspace, overrides)
    return pack_data(ws, settings)


def train(workspace: str | Path, minutes: float | None = None, **overrides: Any) -> dict[str, Any]:
    """train.py [--minutes N]: a summary with the best validation score."""
    ws, settings = _opened(workspace, overrides)
    return train_model(ws, settings, minutes)


def export(workspace: str | Path, **overrides: Any) -> dict[str, Any]:
    """save_model.py: the export manifest."""
    ws, settings = _opened(workspace, overrides)
    return export_model(ws, settings)


def evaluate(workspace: str | Path, split_name: str = "test", **overrides: Any) -> dict[str, Any]:
    """test.py: the test report."""
    ws, settings = _opened(workspace, overrides)
    return evaluate_model(ws, settings, split_name, progress=False)
