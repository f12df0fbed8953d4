"""Settings: one table of defaults, loading of a workspace's overrides, and validation (the
table of every option, with its help, is most of this module's length).

A workspace ``settings.py`` holds only the user's overrides (Django's settings over its global
defaults). Loading checks every value against the table below: an unknown name suggests the
closest valid one, a wrong type or range says what is allowed, and each message names the file
and line.

>>> s = load_settings(None, overrides=["EPOCHS=3"])
>>> s.EPOCHS, s.MODE
(3, 'CTC')
"""

from __future__ import annotations

import ast
import difflib
import json
import runpy
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from capforge.data.images import FRAME_MERGES
from capforge.errors import SettingsError
from capforge.models.backbones import BACKBONES as BACKBONE_BUILDERS
from capforge.modes import MODE_CLASSES
from capforge.options import DATA, LOOP, MODEL, SERVE, TRAIN, Option

MODES = MODE_CLASSES.keys()  # a live view: a mode added to the registry is a valid MODE at once
BACKBONES = BACKBONE_BUILDERS.keys()
RESIZE_POLICIES = ("pad", "stretch")

# The options every workspace has; a mode's own (Mode.options) join them in table().
GLOBAL_OPTIONS: tuple[Option, ...] = (
    Option("MODE", "CTC", str, "recognition mode", MODEL, choices=MODES),
    Option("IMAGE_HEIGHT", 48, int, "model input height in pixels", DATA, minimum=8, maximum=1024),
    Option("IMAGE_WIDTH", 128, int, "model input width in pixels", DATA, minimum=8, maximum=2048),
    Option("IMAGE_CHANNELS", 1, int, "1 = greyscale input, 3 = colour input", DATA, choices=(1, 3)),
    Option("RESIZE", "pad", str, "'pad' keeps the aspect ratio and pads; 'stretch' distorts to fit",
           DATA, choices=RESIZE_POLICIES),
    Option("FRAMES", "first", str, "what the model reads of an animated image (GIF): 'first' or 'last' frame, "
           "'frame' (FRAME_INDEX), or per pixel across all frames the 'darkest', 'lightest' or 'median' "
           "(characters drawn in different frames: 'darkest' for dark text)", DATA, choices=FRAME_MERGES),
    Option("FRAME_INDEX", 0, int, "the frame FRAMES = 'frame' reads (0: the first; past the last: the last)",
           DATA, minimum=0, maximum=1000),
    Option("FONT_PATH", "", str, "fonts gen_sample_by_captcha.py draws with: a font file or a folder of them (empty: "
           "the captcha package's, or for Chinese characters the CJK fonts installed, e.g. fonts-wqy-microhei)", DATA),
    Option("CAPTCHA_LENGTH", 4, int, "maximum characters per label (ORDINARY, CTC_TINY); "
           "default generator length", DATA, minimum=1, maximum=64),
    Option("CHARSET", "", (str, list), "the characters (or class names) the model outputs; "
           "'' learns them from the training labels", DATA),
    Option("CASE_SENSITIVE", False, bool, "False folds labels and charset to lower case", DATA),
    Option("LABEL_SEPARATOR", "_-.", str, "characters that end the label in a file name "
           "('abcd_1.png', 'abcd-1.png', 'abcd.1.png'); '' uses the whole name", DATA),
    Option("VALIDATION_SPLIT", 0.1, float, "share of the pool split into validation", DATA,
           minimum=0.0, maximum=0.5),
    Option("TEST_SPLIT", 0.1, float, "share of the pool split into test", DATA,
           minimum=0.0, maximum=0.5),
    Option("SEED", 42, int, "seed for splitting, shuffling and initialisation", DATA, minimum=0),
    Option("PACK_SHARD_SIZE", 2000, int, "images per TFRecord shard", DATA, minimum=1),
    Option("PACK_COMPRESSION", "", str, "TFRecord compression", DATA, choices=("", "GZIP", "ZLIB")),
    Option("BACKBONE", "small_cnn", str, "feature extractor", MODEL, choices=BACKBONES),
    Option("PRETRAINED", False, bool, "load ImageNet weights (needs a download; never required)",
           MODEL),
    Option("BATCH_SIZE", 64, int, "images per training step", TRAIN, minimum=1, maximum=4096),
    Option("EPOCHS", 100, int, "maximum passes over the training data without --minutes (with it, "
           "the budget decides)", TRAIN,
           minimum=1, maximum=100000),
    Option("LR", 2e-3, float, "initial learning rate", TRAIN, minimum=1e-7, maximum=1.0),
    Option("EARLY_PATIENCE", 10, int, "epochs in which neither the validation score rose nor its "
           "loss fell before training stops (not with --minutes: a budgeted run finishes its decay)",
           TRAIN, minimum=1),
    Option("LR_PATIENCE", 4, int, "epochs without improvement before the learning rate drops",
           TRAIN, minimum=1),
    Option("LR_SCHEDULE", "auto", str, "'plateau': halve the rate after LR_PATIENCE flat epochs; "
           "'budget': LR for 60 % of the --minutes budget, then a cosine down to 1 % of it; 'auto': budget "
           "when train.py has --minutes, else plateau", TRAIN, choices=("auto", "plateau", "budget")),
    Option("WEIGHT_AVERAGE", 0.99, float, "momentum of the moving average of the weights that "
           "validation, checkpoints and the export use (0: the last step's weights)", TRAIN,
           minimum=0.0, maximum=0.99999),
    Option("UNLABELLED", "pseudo", str, "text and class modes, images in data/unlabelled: 'pseudo' trains on "
           "those the weight-averaged model answers confidently (their answers as labels, in memory only; never "
           "in the pool), 'off' ignores them", TRAIN, choices=("pseudo", "off")),
    Option("PSEUDO_PRECISION", 0.9, float, "the share of validation answers that must be right at the "
           "confidence pseudo-labels need: the lower, the more unlabelled images are learnt and the more of them "
           "wrongly", TRAIN, minimum=0.5, maximum=1.0),
    Option("UNLABELLED_RATIO", 2, int, "pseudo-labelled images added to each training batch, per labelled "
           "image", TRAIN, minimum=1, maximum=16),
    Option("LABEL_SMOOTHING", 0.0, float, "label smoothing for softmax modes", TRAIN,
           minimum=0.0, maximum=0.5),
    Option("DATA_ENHANCEMENT", True, bool, "random augmentation of training images", TRAIN),
    Option("AUGMENT_WARP", 0.0, float, "with DATA_ENHANCEMENT, also turn, shear and scale each training image "
           "(1: up to 4 degrees, 0.15, 12 %; 0: not)", TRAIN, minimum=0.0, maximum=2.0),
    Option("DISTRIBUTE", "none", str, "'mirrored': all local GPUs (or CPUs); 'multi_worker': "
           "machines listed in TF_CONFIG", TRAIN, choices=("none", "mirrored", "multi_worker")),
    Option("PARITY_TOLERANCE", 1e-3, float, "largest ONNX vs Keras output difference export "
           "accepts", TRAIN, minimum=0.0, maximum=1.0),
    Option("MIN_CONFIDENCE", 0.0, float, "answers below this confidence are not 'accepted'",
           SERVE, minimum=0.0, maximum=1.0),
    Option("MAX_IMAGE_BYTES", 2_000_000, int, "largest image a request may send", SERVE,
           minimum=1000, maximum=50_000_000),
    Option("MAX_BATCH", 32, int, "requests answered together in one model call", SERVE,
           minimum=1, maximum=1024),
    Option("BATCH_WAIT_MS", 0.0, float, "how long a lone request waits for others to batch with "
           "(0: requests that queue while the model is busy are batched anyway)",
           SERVE, minimum=0.0, maximum=1000.0),
    Option("INFERENCE_THREADS", 1, int, "onnxruntime threads per model call when serving (0: one per "
           "core); 1 leaves the other cores to decoding and HTTP, and is fastest under load",
           SERVE, minimum=0, maximum=256),
    Option("CACHE_SIZE", 2048, int, "answers kept for identical images (0 turns the cache off)",
           SERVE, minimum=0),
    Option("FEEDBACK", False, bool, "accept corrected labels at POST /api/v1/feedback (into data/inbox "
           "for review)", LOOP),
    Option("CAPTURE", "off", str, "which answered images the server keeps in data/inbox for review: "
           "'doubtful' (below CAPTURE_BELOW or not accepted), 'all', or 'off'", LOOP,
           choices=("off", "doubtful", "all")),
    Option("CAPTURE_BELOW", 0.9, float, "with CAPTURE = 'doubtful', answers below this confidence are "
           "kept", LOOP, minimum=0.0, maximum=1.0),
    Option("OUTCOME_WINDOW", 0, int, "the newest answers kept (image and answer) so that crawlers can "
           "report them right or wrong at POST /api/v1/report; 0: only captured ones can be reported",
           LOOP, minimum=0, maximum=1_000_000),
    Option("INBOX_MAX_FILES", 10000, int, "images data/inbox holds at most (captured, fed back, "
           "pre-labelled); beyond it nothing more is kept", LOOP, minimum=1),
    Option("INBOX_MAX_MB", 500.0, float, "megabytes data/inbox holds at most", LOOP, minimum=0.1),
    Option("RECENT_SPLIT", 0.2, float, "share of newly labelled images capforge retrain holds out as "
           "data/recent, the split a candidate must improve on", LOOP, minimum=0.05, maximum=0.5),
)

# Why the defaults are what they are: bench/results/defaults.md.


def table(mode: str | None = None) -> dict[str, Option]:
    """The settings table: the global options, then the options MODE ``mode`` declares
    (``Mode.options``), or every registered mode's when ``mode`` is None. Read live from the
    registry, so a mode added there brings its settings with it."""
    out = {o.name: o for o in GLOBAL_OPTIONS}
    for name, cls in MODE_CLASSES.items():
        if mode is None or name == mode:
            out.update({o.name: o for o in cls.options if o.name not in out})
    return out


def owners(name: str) -> list[str]:
    """The modes that declare setting ``name`` as their own (none for a global setting)."""
    return [mode for mode, cls in MODE_CLASSES.items() if any(o.name == name for o in cls.options)]


def default_of(name: str, mode: str) -> Any:
    """The default of setting ``name`` under MODE ``mode`` (the mode's own, else the table's)."""
    mode_cls = MODE_CLASSES.get(mode)
    return (mode_cls.defaults if mode_cls else {}).get(name, table()[name].default)


SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(o.section for o in GLOBAL_OPTIONS))


class Settings(Mapping[str, Any]):
    """Resolved, validated settings; read them as ``s.EPOCHS`` or ``s["EPOCHS"]``."""

    def __init__(self, values: dict[str, Any], source: Path | None = None) -> None:
        self._values = dict(values)
        self.source = source

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_json(self) -> str:
        """The resolved settings as JSON, for saving with every run and export."""
        return json.dumps(self._values, indent=2, ensure_ascii=False)

    def describe(self) -> str:
        """Human-readable table: name, value, and whether it differs from the default."""
        lines = []
        for option in table(self._values["MODE"]).values():
            value = self._values[option.name]
            mark = "" if value == default_of(option.name, self._values["MODE"]) else "   (changed)"
            lines.append(f"{option.name:<18} = {value!r}{mark}")
        return "\n".join(lines)


def _assignment_lines(tree: ast.Module) -> dict[str, int]:
    """Map each top-level assigned name to the line of its last assignment."""
    lines: dict[str, int] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name):
                lines[target.id] = node.lineno
    return lines


def _suggest(name: str) -> str:
    names = table()
    close = difflib.get_close_matches(name.upper(), names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else f"; valid settings: {', '.join(names)}"


def _read_file(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Run a settings file and return its upper-case names with their line numbers."""
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise SettingsError(f"{path} line {exc.lineno}: invalid Python: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None
    try:
        namespace = runpy.run_path(str(path), run_name="capforge_settings")
    except Exception as exc:  # the user's file raised: report where, not a traceback
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        where = f" line {frames[-1].lineno}" if frames else ""
        raise SettingsError(f"{path}{where}: {type(exc).__name__}: {exc}") from None
    lines = _assignment_lines(tree)
    values: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or name not in lines:
            continue
        if name.isupper():
            values[name] = value
        elif name.upper() in table():
            raise SettingsError(f"{path} line {lines[name]}: settings are upper case; "
                                f"received {name}, did you mean {name.upper()}?")
    return values, lines


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` from ``--set``; VALUE is a Python literal, or else a plain string.

    >>> parse_override("EPOCHS=3"), parse_override("MODE=CTC")
    (('EPOCHS', 3), ('MODE', 'CTC'))
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SettingsError(f"--set expects KEY=VALUE; received {text!r}")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return key, value


def load_settings(workspace: Path | None, overrides: Sequence[str] = ()) -> Settings:
    """Load defaults, then ``workspace/settings.py``, then ``--set`` overrides; validate all."""
    given: dict[str, Any] = {}
    where_given: dict[str, str] = {}
    path = None
    options = table()
    if workspace is not None:
        path = Path(workspace) / "settings.py"
        if not path.is_file():
            raise SettingsError(f"no settings.py in {workspace}; is it a capforge workspace? "
                                "Create one with New_work.py")
        file_values, lines = _read_file(path)
        for name, value in file_values.items():
            where = f"{path} line {lines[name]}"
            option = options.get(name)
            if option is None:
                raise SettingsError(f"{where}: unknown setting {name}{_suggest(name)}")
            problem = option.problem(value)
            if problem:
                raise SettingsError(f"{where}: {problem}")
            given[name], where_given[name] = value, where
    for text in overrides:
        name, value = parse_override(text)
        option = options.get(name)
        if option is None:
            raise SettingsError(f"--set {text}: unknown setting {name}{_suggest(name)}")
        if option.accepts_str() and not isinstance(value, (str, list)):
            value = text.partition("=")[2].strip()  # e.g. CHARSET=123 means the text '123'
        problem = option.problem(value)
        if problem:
            raise SettingsError(f"--set {text}: {problem}")
        given[name], where_given[name] = value, f"--set {text}"
    mode = given.get("MODE", options["MODE"].default)
    own = table(mode)
    for name in given:
        if name not in own:  # another mode's setting: it would do nothing here, so say so
            raise SettingsError(f"{where_given[name]}: {name} is a setting of {' and '.join(owners(name))}; "
                                f"this workspace's MODE is {mode}, which does not read it")
    values = {name: default_of(name, mode) for name in options} | given
    _check_together(values, path)
    return Settings(values, path)


def _check_together(values: dict[str, Any], path: Path | None) -> None:
    """Checks that involve more than one setting."""
    where = f"{path}: " if path else ""
    if values["VALIDATION_SPLIT"] + values["TEST_SPLIT"] >= 0.9:
        raise SettingsError(f"{where}VALIDATION_SPLIT + TEST_SPLIT must leave at least 10 % for "
                            f"training; received {values['VALIDATION_SPLIT']} + {values['TEST_SPLIT']}")
    problem = MODE_CLASSES[values["MODE"]].settings_problem(values)
    if problem:
        raise SettingsError(f"{where}{problem}")
    charset = values["CHARSET"]
    if isinstance(charset, str) and len(set(charset)) != len(charset):
        repeated = sorted({c for c in charset if charset.count(c) > 1})
        raise SettingsError(f"{where}CHARSET must not repeat characters; repeated: {''.join(repeated)!r}")


def render_settings_file(site: str, mode: str, version: str) -> str:
    """The text of a new workspace's settings.py: MODE set, every other option commented."""
    out = [
        f'"""Settings for the capforge workspace {site!r} (created by capforge {version}).',
        "",
        "Only what you change belongs here; every other setting keeps the default shown.",
        "Uncomment a line to change it. Print the resolved values with:",
        "    capforge settings <this folder>",
        "Any step also takes --set KEY=VALUE to override a setting for one run.",
        '"""',
        "",
        f"MODE = {mode!r}",
    ]
    own = table(mode)
    for section in SECTIONS:
        out += ["", f"# --- {section} ---"]
        for option in own.values():
            if option.section == section and option.name != "MODE":
                out.append(f"# {option.name} = {default_of(option.name, mode)!r}  # {option.help}; "
                           f"{option.allowed()}")
    return "\n".join(out) + "\n"
