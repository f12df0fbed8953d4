"""``./run demo``: the whole user's day on a built-in default, as far as capforge goes today."""

from __future__ import annotations

from pathlib import Path

from capforge.step_table import STEPS
from capforge.steps import invoke
from capforge.data.images import iter_images
from capforge.workspace import Workspace, create_workspace

DEMO_SITE = "demo"


def _is_newer(path: Path, than: Path) -> bool:
    return path.exists() and than.exists() and path.stat().st_mtime >= than.stat().st_mtime


def run_demo(works: Path, count: int = 2000, minutes: float = 5.0, serve: bool = True) -> int:
    """Scaffold works/demo (or reuse it), then generate, check, split, pack, train (bounded in
    time), export and test; steps already done on an earlier run are skipped."""
    root = works.resolve() / DEMO_SITE
    if (root / "settings.py").is_file():
        print(f"== reusing {root}")
        ws = Workspace(root)
    else:
        ws = create_workspace(works, DEMO_SITE, "CTC")
        print(f"== created {root}")
    best = ws.checkpoints / "best.keras"
    trained = best.exists() and not (ws.checkpoints / "backup").exists()
    has_data = any(next(iter_images(folder), None) for _, folder in ws.data_splits())
    plan: list[tuple[str, list[str]]] = []
    if not has_data:
        plan.append(("gen", ["--count", str(count), "--seed", "1"]))
    plan += [("check", ["--fix"]), ("split", [])]
    if not trained:
        plan += [("pack", []), ("train", ["--minutes", str(minutes)])]
    else:
        print(f"== already trained ({ws.relative(best)}); init_working_space.py --reset retrains")
    if not _is_newer(ws.exports / "current" / "manifest.json", best):
        plan.append(("export", []))
    plan.append(("test", []))
    if serve:
        print("== serving: open http://127.0.0.1:7860/ in a browser; try "
              f"python {root}/spider_example.py in another terminal; Ctrl-C stops", flush=True)
        plan.append(("serve", ["--demo-captcha"]))
    for step, argv in plan:
        print(f"== {step}: {STEPS[step].summary}", flush=True)
        code = invoke(step, root, argv)
        if code == 3:  # NotBuiltError: stop here and say what comes next
            print(f"== the demo stops before '{step}', which is not built yet. The workspace "
                  f"{root} holds the data, the trained model and its test report.")
            return 0
        if code != 0:
            return code
    return 0
