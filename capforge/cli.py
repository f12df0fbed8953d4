"""The console entry: ``capforge new | demo | <step> <workspace>`` (the steps: capforge.steps)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from capforge.version import __version__
from capforge.demo import run_demo
from capforge.settings import MODES, table
from capforge.step_table import STEPS
from capforge.steps import _add_step_options, _guarded, _run_step, invoke, run_step
from capforge.workspace import create_workspace

__all__ = ["build_parser", "invoke", "main", "run_step"]  # invoke, run_step: older workspaces import them here


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capforge", description="scaffold, train and serve captcha recognisers, one workspace per site")
    parser.add_argument("--version", action="version", version=f"capforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    new = sub.add_parser("new", help="scaffold a workspace")
    new.add_argument("works_dir", type=Path, help="folder that holds the workspaces, e.g. works")
    new.add_argument("site_name", help="the workspace (and model) name, e.g. weibo")
    new.add_argument("--mode", default=table()["MODE"].default, type=str.upper, choices=MODES)
    new.add_argument("--force", action="store_true",
                     help="re-render an existing workspace (changed files kept as .bak)")
    demo = sub.add_parser("demo", help="run the whole pipeline on a built-in default")
    demo.add_argument("--works", type=Path, default=Path("works"), help="works folder (default works)")
    demo.add_argument("--count", type=int, default=2000, help="captchas to generate (default 2000)")
    demo.add_argument("--minutes", type=float, default=5.0, help="training time budget (default 5)")
    demo.add_argument("--no-serve", action="store_true", help="stop after the test report")
    for step, entry in STEPS.items():
        p = sub.add_parser(step, help=entry.summary)
        p.add_argument("workspace", type=Path, help="the workspace folder, e.g. works/weibo")
        _add_step_options(p, step)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``capforge`` console script."""
    args = build_parser().parse_args(argv)

    def action() -> int:
        if args.command == "new":
            ws = create_workspace(args.works_dir, args.site_name, args.mode, args.force)
            print(f"created workspace {ws.root} (MODE={args.mode}); next: edit settings.py, then "
                  f"run gen_sample_by_captcha.py or drop labelled images into data/pool")
            return 0
        if args.command == "demo":
            return run_demo(args.works, args.count, args.minutes, not args.no_serve)
        return _run_step(args.command, args.workspace, args)

    return _guarded(action, quiet=args.command != "serve")
