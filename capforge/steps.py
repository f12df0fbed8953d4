"""The steps: one table shared by the ``capforge`` command, the workspace scripts and the demo.

Each workspace script calls :func:`run_step`, which parses the same options as the matching
``capforge`` sub-command. A :class:`CapforgeError` is caught here, once: its message is printed
on one line and the process exits non-zero, with no traceback. Each step imports what it runs
when it runs, so ``--help`` and the server start without loading TensorFlow. (One handler and
its options per step, in one table: that table is this module's length.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from capforge.errors import Aborted, CapforgeError, DataError
from capforge.modes import MODE_CLASSES
from capforge.modes.answer_rules import rule_of
from capforge.quiet import quiet_output
from capforge.settings import Settings, load_settings
from capforge.step_table import STEPS
from capforge.workspace import Workspace, hook, open_workspace

Handler = Callable[[Workspace, Settings, argparse.Namespace], int]


def _confirm(question: str) -> bool:
    if not sys.stdin or not sys.stdin.isatty():
        raise Aborted(f"{question} Refusing without a terminal to confirm; pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


# ---- the steps -------------------------------------------------------------------------

def _args_init(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reset", action="store_true", help="empty checkpoints/ and logs/ (asks first)")
    p.add_argument("--yes", action="store_true", help="do not ask before --reset")


def cmd_init(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    created = ws.init_layout()
    print(f"{ws.root}: " + (f"created {', '.join(ws.relative(c) for c in created)}"
                            if created else "all folders present"))
    if args.reset:
        removed = ws.reset((lambda _: True) if args.yes else _confirm)
        print(f"reset: removed {len(removed)} item(s) from checkpoints/ and logs/; "
              "data and exports untouched")
    return 0


def _args_gen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=1000, help="how many images (default 1000)")
    p.add_argument("--length", help="label length N or range MIN-MAX (default CAPTCHA_LENGTH); "
                   "EFFICIENTDET: targets per image (default 3-5)")
    p.add_argument("--charset", help="characters to draw from (default CHARSET, else 0-9a-z); 'hanzi': the 3,755 "
                   "common Chinese characters, 'hanzi:N' N of them")
    p.add_argument("--width", type=int, help="image width (default 160; click captchas 320)")
    p.add_argument("--height", type=int, help="image height (default 60; click captchas 160)")
    p.add_argument("--format", default="png", help="png, jpg, gif, bmp or webp (default png)")
    p.add_argument("--frames", type=int, default=1, help="text captchas: with --format gif, animations of this "
                   "many frames that show the characters across them (default 1: still images)")
    p.add_argument("--seed", type=int, help="seed for reproducible output (default: a new one)")
    p.add_argument("--source", type=Path, help="ROTATE, SLIDER: a folder of your site's pictures (upright "
                   "pictures; slider backgrounds) to build captchas from (default: pictures drawn from nothing)")
    p.add_argument("--out", type=Path, help="output folder (default data/pool)")
    p.add_argument("--workers", type=int, help="processes (default: one per core)")


def cmd_gen(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    import dataclasses
    import random

    from capforge.data.generate import generate, named_charset, parse_length

    charset = named_charset(args.charset) if args.charset else settings.CHARSET or rule_of(settings).sample_charset
    if isinstance(charset, list):
        charset = "".join(charset)
    cut = sorted(set(charset) & set(settings.LABEL_SEPARATOR))
    if cut:
        raise DataError(f"the labels would hold {cut}, where LABEL_SEPARATOR ({settings.LABEL_SEPARATOR!r}) ends a "
                        f"label in a file name: they would be read back cut short. Set LABEL_SEPARATOR = '_' in "
                        f"settings.py, or leave {cut} out of the charset")
    mode_cls = MODE_CLASSES[settings.MODE]
    spec = mode_cls.sample_spec(settings, charset, parse_length(args.length) if args.length else None,
                                args.width, args.height, args.format.lower(), args.source)
    if args.frames != 1:
        if not hasattr(spec, "frames"):
            raise DataError(f"--frames is for text captchas; {settings.MODE} draws other pictures")
        spec = dataclasses.replace(spec, frames=args.frames)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    out = (args.out or ws.pool).resolve()
    paths = generate(spec, out, args.count, seed, args.workers)
    boxes = " with VOC XML boxes" if mode_cls.labels_from_boxes else ""
    print(f"wrote {len(paths)} images{boxes} to {ws.relative(out)} (seed {seed}; "
          f"--seed {seed} reproduces them)")
    return 0


def _args_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fix", action="store_true", help="move bad files to data/quarantine")
    p.add_argument("--suspects", action="store_true", help="instead: find labels that a model trained without "
                   "them confidently reads otherwise (cross-validated over the packed splits); queue them for review")
    p.add_argument("--folds", type=int, default=4, help="--suspects: models to train, each without a fold (default 4)")
    p.add_argument("--minutes", type=float, default=2.0, help="--suspects: training minutes per fold (default 2; "
                   "0: EPOCHS, with early stopping)")
    p.add_argument("--confidence", type=float, default=0.9,
                   help="--suspects: flag readings other than the label at this confidence or more (default 0.9)")


def cmd_check(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.check import check, format_report, quarantine, save_report

    if args.suspects:
        return _suspects(ws, settings, args)
    report = check(ws, settings, hook(ws, "utils", "label_from_path"),
                     hook(ws, "utils", "preprocess_image"))
    print(format_report(report, ws, settings))
    ws.data.mkdir(parents=True, exist_ok=True)
    save_report(report, ws.data / "check_report.json")
    print(f"full report: {ws.relative(ws.data / 'check_report.json')}")
    if report.findings and args.fix:
        moved = quarantine(report.findings, ws)
        print(f"moved {len(moved)} file(s) to {ws.relative(ws.quarantine)} "
              "(reasons in REASONS.tsv); nothing was deleted")
        return 0
    return 1 if report.findings else 0


def _suspects(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    """check_file.py --suspects (capforge.suspects)."""
    from capforge.suspects import find_suspects, queue_for_review

    summary = find_suspects(ws, settings, args.folds, args.minutes, args.confidence)
    suspects = summary["suspects"]
    print(f"{len(suspects)} suspect label(s) among {summary['images']} images (models trained without each fold "
          f"read their fold at {', '.join(f'{a:.3f}' for a in summary['fold_accuracy'])}); list: reports/suspects.csv")
    for suspect in suspects[:10]:
        print(f"  {suspect['path']}: labelled {suspect['label']!r}, read {suspect['reading']!r} "
              f"at {suspect['confidence']:.3f}")
    if suspects:
        queued = queue_for_review(ws, settings, summary)
        print(f"queued {queued} for review, first in line (review.py, or the page's review tab); a label given "
              "there renames the image where it is")
    return 0


def _args_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", type=Path,
                   help="split a folder outside the workspace (copied; default: move data/pool)")


def cmd_split(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.data.images import iter_images
    from capforge.split import split

    ws.init_layout()
    result = split(ws, settings, args.source)
    totals = {s: sum(1 for _ in iter_images(ws.split_dir(s))) for s in ("train", "validation", "test")}
    for held, copies in result.kept.items():
        print(f"kept {len(copies)} image(s) where they are, e.g. {ws.relative(copies[0])}: they are copies "
              f"of images in {ws.relative(ws.split_dir(held))}, which this split adds nothing to; "
              "training on them would train on those images. Delete them, or move them there yourself.")
    if not result.moves:
        if not any(totals.values()):
            raise DataError(f"no images in {ws.relative(args.source or ws.pool)}; generate some with "
                            "gen_sample_by_captcha.py or drop labelled images there")
        print("nothing new to split; " + ", ".join(f"{k} {v}" for k, v in totals.items()))
        return 0
    verb = "copied" if args.source else "moved"
    print(f"{verb} {sum(result.counts.values())} images: "
          + ", ".join(f"{s} +{result.counts[s]}" for s in ("train", "validation", "test"))
          + "; now " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    return 0


def _args_pack(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="processes (default: one per core)")


def cmd_pack(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.pack import pack

    manifest = pack(ws, settings, args.workers)
    for split, info in manifest["splits"].items():
        skipped = manifest["skipped"][split]
        if split == "synthetic" and not info["count"]:
            continue
        why = "unreadable or copies of validation and test images" if split == "unlabelled" else "unreadable or unlabelled"
        note = f" (skipped {len(skipped)} {why}, e.g. {skipped[0]})" if skipped else ""
        drawn = " drawn in data/synthetic (SYNTHETIC), learnt until the model reads" if split == "synthetic" else ""
        print(f"{split}: {info['count']} images{drawn} in {len(info['shards'])} shard(s){note}")
    print(f"wrote {ws.relative(ws.packed)}/manifest.json")
    return 0


def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, help="stop after this much wall time")
    p.add_argument("--continue", dest="continue_from_best", action="store_true",
                   help="train the best checkpoint of a finished run further")


def cmd_train(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.train import train

    summary = train(ws, settings, args.minutes, args.continue_from_best)
    print(f"trained {summary['epochs_run']} epoch(s) in {summary['seconds']} s"
          + (" (resumed)" if summary["resumed"] else "")
          + (f"; best {summary['monitor']} {summary['best']:.4f}" if summary["best"] is not None else "")
          + "; "
          f"checkpoint {ws.relative(ws.checkpoints)}/best.keras, curves logs/training_curves.png")
    if settings["DISTRIBUTE"] == "multi_worker":
        print(f"weights {summary['weights']} (every worker of this run prints the same)")
    return 0


def cmd_export(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.distribute import worker_role
    from capforge.export import export

    role = worker_role(settings["DISTRIBUTE"])
    if not role.chief:
        print(f"{role} of the cluster: the chief writes the export; nothing to export here")
        return 0
    manifest = export(ws, settings)
    parity = manifest["parity"]
    print(f"exported {ws.relative(ws.exports)}/current (model.onnx, model.keras, manifest.json); "
          f"parity on {parity['images']} images: same text, max output difference "
          f"{parity['max_abs_diff']:.1e}")
    return 0


def _args_test(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="test", choices=("test", "validation", "train"))


def cmd_test(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.evaluate import evaluate
    from capforge.modes import summary_text

    report = evaluate(ws, settings, args.split)
    print(summary_text(report))
    return 0


def _args_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="the folder of images to read (sub-folders too)")
    p.add_argument("--out", type=Path, default=Path("answers.csv"),
                   help="the CSV to write: file, answer, confidence, accepted, problem (default answers.csv)")


def cmd_predict(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.predict import predict_folder

    counts = predict_folder(ws, settings, args.folder, args.out)
    print(f"read {counts['images']} images with the {counts['model']}: {counts['accepted']} accepted"
          + (f", {counts['unreadable']} unreadable (see the problem column)" if counts["unreadable"] else "")
          + f"; wrote {args.out}")
    return 0


def _args_prelabel(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="the folder of unlabelled images (sub-folders too)")


def cmd_prelabel(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.predict import prelabel_folder

    counts = prelabel_folder(ws, settings, args.folder)
    print(f"pre-labelled {counts['images']} images with the {counts['model']}: answers in {counts['csv']} "
          f"(least confident first); {counts['inbox']} added to {ws.relative(ws.inbox)} for review"
          + (f", {counts['inbox_full']} not (the inbox is full: INBOX_MAX_FILES, INBOX_MAX_MB)"
             if counts["inbox_full"] else "")
          + (f", {counts['unreadable']} unreadable" if counts["unreadable"] else "")
          + "; next: capforge review " + str(ws.root))
    return 0


def cmd_review(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.evaluate import load_predictor
    from capforge.inbox import Inbox, Review
    from capforge.terminal_review import review_in_terminal

    try:
        predictor, source = load_predictor(ws)
        version = predictor.manifest.get("exported_at", source)

        def answers(paths: list[Path]) -> list[tuple[str, float]]:
            return [(p.text, p.confidence) for p in predictor.predict(paths)]
    except CapforgeError:  # no model yet: images dropped in by hand are reviewed without a pre-filled answer
        answers, version = None, ""
    review_in_terminal(Review(Inbox(ws, settings), answers, version), pictures=sys.stdout.isatty())
    return 0


def _args_retrain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, help="training budget (default: EPOCHS with early stopping)")


def cmd_retrain(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    from capforge.retrain import report_text, retrain

    report = retrain(ws, settings, args.minutes)
    print(report_text(report))
    print(f"report: {report['report_path']}")
    return 0


def _args_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--workers", type=int, help="server processes, each with its own copy of the models "
                   "(default: one per core, at most 4)")
    p.add_argument("--models", help="comma-separated site names to serve (default: every export)")
    p.add_argument("--api-key", default="", help="require an API key: NAME:KEY pairs, comma-separated (one "
                   "per crawler), or one KEY (or CAPFORGE_API_KEY); crawlers send X-API-Key, people log in at /login")
    p.add_argument("--rate-limit", type=float, default=0.0, help="API requests a second per key and worker "
                   "process; more get 429 with Retry-After (default 0: no limit)")
    p.add_argument("--demo-captcha", action="store_true", help="serve synthetic captchas at /demo/captcha")


def cmd_serve(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    return serve_works(ws.root.parent, args)


def serve_works(works: Path, args: argparse.Namespace) -> int:
    """Serve every exported workspace in the folder ``works`` (a container's mounted works/)."""
    from capforge.serve.server import serve

    config = {"works": str(works), "api_keys": args.api_key, "rate_limit": args.rate_limit,
              "demo_captcha": args.demo_captcha,
              "models": args.models.split(",") if args.models else None, "overrides": args.overrides}
    serve(config, args.host, args.port, args.workers)
    return 0


def is_works_folder(path: Path) -> bool:
    """Whether ``path`` holds workspaces rather than being one."""
    return path.is_dir() and not (path / "settings.py").exists() and any(
        (child / "settings.py").is_file() for child in path.iterdir())


def cmd_settings(ws: Workspace, settings: Settings, args: argparse.Namespace) -> int:
    print(f"# {settings.source}")
    print(settings.describe())
    return 0


def _add_step_options(p: argparse.ArgumentParser, step: str) -> None:
    add = globals().get(f"_args_{step}")
    if add:
        add(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting for this run (repeatable), e.g. --set EPOCHS=3")


def _run_step(step: str, workspace: Path, args: argparse.Namespace) -> int:
    if step == "serve" and is_works_folder(Path(workspace)):  # the server also takes a works folder
        return serve_works(Path(workspace).resolve(), args)
    ws = open_workspace(workspace)
    settings = load_settings(ws.root, args.overrides)
    handler: Handler = globals()[f"cmd_{step}"]
    return handler(ws, settings, args)


def _guarded(action: Callable[[], int], quiet: bool = True) -> int:
    """Run ``action``; turn a CapforgeError into a one-line message and its exit code. ``quiet``
    filters TensorFlow's start-up notices from stderr (the server, which never imports
    TensorFlow, writes its logs directly)."""
    try:
        if not quiet:
            return action()
        with quiet_output():
            return action()
    except CapforgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def invoke(step: str, workspace: Path, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` as the workspace script of ``step`` would, run it, return the exit code."""
    entry = STEPS[step]
    parser = argparse.ArgumentParser(prog=entry.script or f"capforge {step}", description=entry.summary)
    _add_step_options(parser, step)
    args = parser.parse_args(argv)
    return _guarded(lambda: _run_step(step, workspace, args), quiet=step != "serve")


def run_step(step: str, workspace: Path) -> None:
    """Entry point of the workspace scripts: run ``step`` with the command line; exits."""
    raise SystemExit(invoke(step, workspace))
