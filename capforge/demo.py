"""``./run demo``: the whole user's day on a built-in default, as far as capforge goes today."""

from __future__ import annotations

from pathlib import Path

from capforge.cli import STEPS, invoke
from capforge.data.labels import iter_images
from capforge.workspace import Workspace, create_workspace

DEMO_SITE = "demo"
DEMO_COUNT = 2000


def run_demo(works: Path) -> int:
    """Scaffold works/demo (or reuse it), generate, check, split, then every later step."""
    root = works.resolve() / DEMO_SITE
    if (root / "settings.py").is_file():
        print(f"== reusing {root}")
        ws = Workspace(root)
    else:
        ws = create_workspace(works, DEMO_SITE, "CTC")
        print(f"== created {root}")
    has_data = any(next(iter_images(folder), None) for _, folder in ws.data_splits())
    plan: list[tuple[str, list[str]]] = [] if has_data else [("gen", ["--count", str(DEMO_COUNT), "--seed", "1"])]
    plan += [("check", ["--fix"]), ("split", []), ("pack", []), ("train", []),
             ("test", []), ("export", []), ("serve", [])]
    for step, argv in plan:
        print(f"== {step}: {STEPS[step][0]}")
        code = invoke(step, root, argv)
        if code == 3:  # NotBuiltError: stop here and say what comes next
            print(f"== the demo stops before '{step}', which is not built yet. The workspace "
                  f"{root} holds the generated, checked and split data.")
            return 0
        if code != 0:
            return code
    return 0
