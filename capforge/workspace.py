"""A workspace: one folder per captcha site, its layout, scaffolding and user hooks.

>>> ws = Workspace(Path("works/weibo"))
>>> ws.relative(ws.pool)
'data/pool'
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import re
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import ModuleType
from typing import Callable, Iterator

from capforge.version import __version__
from capforge.errors import Aborted, WorkspaceError
from capforge.settings import MODES, render_settings_file, table
from capforge.step_table import SCRIPTS

TEMPLATES = Path(__file__).parent / "templates" / "workspace"
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SPLITS = ("train", "validation", "test")
RECENT = "recent"  # newly labelled images held out by capforge retrain (capforge.retrain)
RECORD_FILE = "capforge.json"

# Files copied as they are: the example crawler is meant to be read and adapted.
PLAIN_FILES = ("models.py", "utils.py", "spider_example.py")


@dataclass(frozen=True)
class Workspace:
    """The folder layout of one workspace; creating folders is ``init_layout``'s job."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pool(self) -> Path:
        """Where labelled images are dropped or generated, before splitting."""
        return self.data / "pool"

    def split_dir(self, split: str) -> Path:
        return self.data / split

    @property
    def quarantine(self) -> Path:
        return self.data / "quarantine"

    @property
    def inbox(self) -> Path:
        """Images waiting for a person's label (capforge.inbox)."""
        return self.data / "inbox"

    @property
    def unlabelled(self) -> Path:
        """Images nobody labelled (a crawler's downloads) that training learns from as well, for
        modes that can (``Mode.learns_unlabelled``); never split, never labels in the pool."""
        return self.data / "unlabelled"

    @property
    def synthetic(self) -> Path:
        """Generated captchas that pack_dataset.py adds to the training split (capforge.synthetic)."""
        return self.data / "synthetic"

    @property
    def packed(self) -> Path:
        return self.root / "packed"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    def folders(self) -> list[Path]:
        return [self.pool, *(self.split_dir(s) for s in SPLITS), self.quarantine, self.inbox, self.unlabelled,
                self.packed, self.checkpoints, self.logs, self.exports]

    def data_splits(self) -> Iterator[tuple[str, Path]]:
        """(name, folder) of the pool and each split, in the order duplicates are resolved."""
        for split in (*SPLITS, "pool"):
            yield split, self.pool if split == "pool" else self.split_dir(split)

    def split_of(self, path: Path) -> str:
        """Which of pool / train / validation / test / inbox / unlabelled holds ``path``."""
        for split, folder in (*self.data_splits(), ("inbox", self.inbox), ("unlabelled", self.unlabelled)):
            if folder in path.parents:
                return split
        return "other"

    def relative(self, path: Path) -> str:
        """``path`` relative to the workspace, for messages."""
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def init_layout(self) -> list[Path]:
        """Create any missing folder; return the ones created. Never touches existing files."""
        created = [f for f in self.folders() if not f.is_dir()]
        for folder in created:
            folder.mkdir(parents=True, exist_ok=True)
        return created

    def reset(self, confirm: Callable[[str], bool]) -> list[Path]:
        """Empty checkpoints/ and logs/ after ``confirm``; datasets and exports are never touched."""
        targets = [p for d in (self.checkpoints, self.logs) if d.is_dir() for p in d.iterdir()]
        if not targets:
            return []
        if not confirm(f"Delete {len(targets)} item(s) in checkpoints/ and logs/ of {self.root}?"):
            raise Aborted("reset cancelled; nothing was deleted")
        for path in targets:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        return targets


def open_workspace(path: Path) -> Workspace:
    """A workspace that exists (it has a settings.py), or a WorkspaceError saying what is wrong."""
    root = Path(path).expanduser().resolve()
    if not (root / "settings.py").is_file():
        hint = "" if root.exists() else " (no such folder)"
        raise WorkspaceError(f"{root} is not a capforge workspace{hint}: it has no settings.py. "
                             "Create one with: python New_work.py <works_dir> <site_name>")
    return Workspace(root)


def check_site_name(site: str) -> None:
    """Raise WorkspaceError unless ``site`` is a safe folder and model name."""
    if not SITE_NAME.match(site):
        raise WorkspaceError(
            f"invalid site name {site!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit (e.g. weibo, site_12306)")


def _render_files(site: str, mode: str) -> dict[str, str]:
    """The text of every file a new workspace gets."""
    home = str(Path(__file__).resolve().parent.parent)
    step = Template((TEMPLATES / "step_script.py.tmpl").read_text(encoding="utf-8"))
    files = {name: (TEMPLATES / name).read_text(encoding="utf-8") for name in PLAIN_FILES}
    files |= {
        "settings.py": render_settings_file(site, mode, __version__),
        "_capforge.py": Template((TEMPLATES / "_capforge.py.tmpl").read_text(encoding="utf-8"))
        .substitute(capforge_home=repr(home)),
    }
    for script, entry in SCRIPTS.items():
        files[script] = step.substitute(doc=entry.summary, step=entry.command)
    return files


def create_workspace(works_dir: Path, site: str, mode: str = table()["MODE"].default, force: bool = False) -> Workspace:
    """Render ``works_dir/site`` from the templates.

    An existing folder is refused unless ``force``; then files that would change are first
    kept as ``<name>.bak-<time>``, and data folders are never touched.
    """
    check_site_name(site)
    if mode not in MODES:
        raise WorkspaceError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
    root = Path(works_dir).expanduser().resolve() / site
    if root.exists() and not force:
        raise WorkspaceError(f"{root} already exists; pass --force to re-render its scripts "
                             "(changed files are kept as .bak copies, data is never touched)")
    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"{root} exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name, text in _render_files(site, mode).items():
        target = root / name
        if target.exists() and target.read_text(encoding="utf-8", errors="replace") != text:
            target.rename(target.with_name(f"{name}.bak-{stamp}"))
        target.write_text(text, encoding="utf-8")
        if name in SCRIPTS or name == "spider_example.py":
            target.chmod(0o755)
    record = {"capforge_version": __version__, "site": site, "mode": mode, "force": force,
              "created": _dt.datetime.now().isoformat(timespec="seconds"),
              "python": sys.version.split()[0]}
    (root / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    workspace = Workspace(root)
    workspace.init_layout()
    return workspace


def load_hook_module(workspace: Workspace, name: str) -> ModuleType | None:
    """Import the workspace's ``models.py`` or ``utils.py``; errors name the file and line."""
    path = workspace.root / f"{name}.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"capforge_workspace_{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # the user's hook file failed: say where, without a traceback
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        line = getattr(exc, "lineno", None) or (frames[-1].lineno if frames else "?")
        raise WorkspaceError(f"{path} line {line}: {type(exc).__name__}: {exc}") from None
    return module


def hook(workspace: Workspace, module: str, function: str) -> Callable | None:
    """A hook function from the workspace (e.g. utils.label_from_path), or None if absent."""
    loaded = load_hook_module(workspace, module)
    found = getattr(loaded, function, None) if loaded else None
    return found if callable(found) else None
