"""train.py: build the Mode's model on its backbone and fit it on the packed data, with the
callbacks of capforge.callbacks (resume, weight averaging, validation score, best checkpoint,
early stop, learning-rate schedule, logs, time limit)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence


from capforge.version import __version__
from capforge.data.charset import Charset
from capforge.pack import check_pack_matches, read_manifest
from capforge.data.records import load_arrays, load_images, make_dataset
from capforge.distribute import WorkerWorkspace, distribution_strategy, fit_across_machines, worker_role
from capforge.errors import DataError, NotBuiltError, SettingsError, WorkspaceError
from capforge.models.backbones import build_backbone, cpu_warning
from capforge.modes import MODE_CLASSES, Mode, make_mode
from capforge.options import DATA, MODEL
from capforge.settings import table
from capforge.reports import pyplot, save_figure
from capforge.workspace import Workspace, hook

TRAINING_FILE = "training.json"
BEST = "best.keras"


@dataclass
class Setup:
    """What a model is built from: packed data, charset and Mode."""

    manifest: dict[str, Any]
    mode: Mode


def prepare(workspace: Workspace, settings: Mapping[str, Any]) -> Setup:
    """Read the pack manifest, check it against the settings, and make the Mode."""
    manifest = read_manifest(workspace)
    check_pack_matches(manifest, workspace, settings)
    name = settings["MODE"]
    if name not in MODE_CLASSES:
        raise NotBuiltError(f"training MODE={name} is not built yet; built: {', '.join(MODE_CLASSES)}")
    train_labels = manifest["splits"]["train"]["labels"]
    mode_cls = MODE_CLASSES[name]
    charset = Charset(mode_cls.symbols_for(settings, train_labels), 0 if mode_cls.uses_blank else None)
    width = mode_cls.label_width_for(settings, train_labels + manifest["splits"]["validation"]["labels"])
    return Setup(manifest, make_mode(name, charset, settings, width))


def label_lengths(mode: Mode, labels: list[Any]) -> list[int] | None:
    """The shortest and longest label the model learns, in symbols (what an answer can be)."""
    counts = [len(mode.tokens(label)) for label in labels if mode.accepts(label)]
    return [min(counts), max(counts)] if counts else None


def build_model(workspace: Workspace | None, settings: Mapping[str, Any], mode: Mode) -> Any:
    """Backbone (or the workspace's models.build_model) + the Mode's head."""
    shape = (settings["IMAGE_HEIGHT"], settings["IMAGE_WIDTH"], settings["IMAGE_CHANNELS"])

    def backbone() -> Any:
        """The workspace's models.build_model, else the BACKBONE setting's network."""
        custom = hook(workspace, "models", "build_model") if workspace else None
        network = custom(settings, shape) if custom else None
        return network or build_backbone(settings["BACKBONE"], shape, mode.feature_kind, settings["PRETRAINED"])

    return mode.build(shape, backbone)


def load_checkpoint(path: Path) -> Any:
    """A saved Keras model (capforge's custom layers registered first)."""
    import keras

    import capforge.modes.efficientdet.network  # noqa: F401 - registers WeightedFusion for loading
    from capforge.models.backbones import fused_batch_normalization

    fused_batch_normalization()  # registers FusedBatchNormalization for loading

    return keras.models.load_model(path, compile=False)


def checkpoint_weights(workspace: Workspace, model: Any, settings: Mapping[str, Any]) -> list[Any]:
    """The best checkpoint's weights for ``model`` (``--continue``, retrain), refused with what
    changed when they do not fit it: a setting that shapes the network (BACKBONE, the charset, a
    models.py hook) was changed after that checkpoint was trained."""
    path = workspace.checkpoints / BEST
    saved = load_checkpoint(path)
    if [tuple(w.shape) for w in saved.weights] == [tuple(w.shape) for w in model.weights]:
        return saved.get_weights()
    record = workspace.checkpoints / TRAINING_FILE
    then = json.loads(record.read_text(encoding="utf-8")).get("settings", {}) if record.is_file() else {}
    shaping = {name for name, option in table(settings["MODE"]).items() if option.section in (DATA, MODEL)}
    changed = [f"{k} (then {then[k]!r}, now {settings[k]!r})" for k in sorted(shaping & set(then) & set(settings))
               if then[k] != settings[k]]
    raise SettingsError(f"{workspace.relative(path)} does not fit the network these settings build (its "
                        f"{len(saved.weights)} weight arrays against {len(model.weights)}, or of other shapes); "
                        f"settings changed since it was trained: "
                        f"{', '.join(changed) or 'none (models.py, or capforge itself)'}. "
                        "Put them back to continue it, or train afresh: init_working_space.py --reset")


MAX_EPOCHS = 1_000_000  # a budgeted run's epoch limit: in effect none


def draw_model(model: Any, path: Path) -> None:
    """Write the model diagram with keras.utils.plot_model, or say why it cannot."""
    import keras

    try:
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True)
    except (ImportError, OSError) as exc:
        print(f"model diagram skipped ({exc}); it needs pydot and graphviz: "
              "pip install pydot; apt-get install graphviz")


def plot_curves(csv_path: Path, png_path: Path, monitor: str = "val_seq_acc") -> None:
    """Loss and the monitored validation score per epoch, from the CSV log."""
    import csv

    plt = pyplot()
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "val_loss"):
        left.plot(epochs, [float(r[key]) for r in rows], label=key)
    right.plot(epochs, [float(r[monitor]) for r in rows], label=monitor)
    for axis, title in ((left, "loss"), (right, f"validation score ({monitor})")):
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.legend()
    save_figure(fig, png_path)


def train(workspace: Workspace, settings: Mapping[str, Any], minutes: float | None = None,
          continue_from_best: bool = False, verbose: int | str = "auto",
          extra_callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train; return a summary with the best validation sequence accuracy.

    ``verbose="auto"``: Keras' progress bar on a terminal, else one line per epoch. With
    DISTRIBUTE='multi_worker' a worker other than the chief writes only to a scratch folder."""
    role = worker_role(settings["DISTRIBUTE"])
    if settings["DISTRIBUTE"] == "multi_worker" and minutes:
        raise SettingsError("--minutes with DISTRIBUTE='multi_worker': each machine would stop on its own "
                            "clock and leave the others waiting; set EPOCHS instead")
    if role.chief:
        return _train_here(workspace, settings, minutes, continue_from_best, verbose, extra_callbacks)
    with tempfile.TemporaryDirectory(prefix="capforge-worker-") as scratch:
        print(f"{role} of the cluster: training with the chief; its checkpoints and logs are the chief's")
        return _train_here(WorkerWorkspace.of(workspace, Path(scratch)), settings, minutes, continue_from_best,
                           verbose, extra_callbacks)


def _train_here(workspace: Workspace, settings: Mapping[str, Any], minutes: float | None,
                continue_from_best: bool, verbose: int | str, extra_callbacks: Sequence[Any]) -> dict[str, Any]:
    """The training run of this process, writing into ``workspace`` (see :func:`train`). One
    function, a little over 60 lines: its steps run in an order that the strategy, the checkpoint
    record and the callbacks depend on."""
    import keras
    import tensorflow as tf

    from capforge import callbacks  # lazily: it imports TensorFlow, which test.py and export never need

    callbacks.lr_schedule(settings, minutes)  # a schedule without its budget is refused before any work
    strategy = distribution_strategy(settings["DISTRIBUTE"])  # before any TensorFlow op: multi_worker needs it
    setup = prepare(workspace, settings)
    mode = setup.mode
    best_path = workspace.checkpoints / BEST
    resuming = (workspace.checkpoints / "backup").exists()
    if best_path.exists() and not resuming and not continue_from_best:
        raise WorkspaceError(f"{workspace.relative(best_path)} is from a finished run; pass --continue to "
                             "train it further, or init_working_space.py --reset to start over")
    for folder in (workspace.checkpoints, workspace.logs):
        folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(settings["SEED"])
    val = load_arrays(workspace, setup.manifest, "validation", mode)
    packed = setup.manifest["splits"]["validation"]["count"]
    if packed and not val[0].shape[0]:
        raise DataError(f"none of the validation split's {packed} images has a label MODE = {mode.name!r} can "
                        f"learn (symbols of CHARSET, at most {mode.label_width} of them); check_file.py names "
                        "each label's problem")
    if not val[0].shape[0]:
        raise DataError("the validation split has no usable images; run split_dataset.py "
                        "(VALIDATION_SPLIT > 0) and pack_dataset.py")
    pseudo = pseudo_labeller(workspace, settings, setup, val)
    warning = cpu_warning(settings["BACKBONE"])
    if warning and not tf.config.list_physical_devices("GPU"):
        print(f"warning: {warning}", flush=True)
    with strategy.scope():
        train_ds = make_dataset(workspace, setup.manifest, "train", mode, settings["BATCH_SIZE"], True,
                                settings["DATA_ENHANCEMENT"], settings["SEED"], settings["PHOTO_AUGMENT"],
                                pseudo and pseudo.batches(settings["BATCH_SIZE"] * settings["UNLABELLED_RATIO"]),
                                settings["AUGMENT_WARP"])
        val_ds = make_dataset(workspace, setup.manifest, "validation", mode, settings["BATCH_SIZE"], False)
        model = build_model(workspace, settings, mode)
        if continue_from_best and best_path.exists():
            model.set_weights(checkpoint_weights(workspace, model, settings))
        model.compile(optimizer=keras.optimizers.Adam(settings["LR"]), loss=mode.loss())
        # Built here, eagerly, its slots are quick; left to the first traced step they made
        # EfficientDet's first step far slower (bench/results/defaults.md).
        model.optimizer.build(model.trainable_variables)
        fit_across_machines(model, strategy)
    draw_model(model, workspace.logs / "model.png")
    record = {
        "capforge_version": __version__, "mode": mode.name, "charset": mode.charset.to_dict(),
        "label_width": mode.label_width, "preprocessing": setup.manifest["preprocessing"],
        "settings": dict(settings), "label_lengths": label_lengths(mode, setup.manifest["splits"]["train"]["labels"]),
    }
    (workspace.checkpoints / TRAINING_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False))
    (workspace.logs / "settings.json").write_text(json.dumps(dict(settings), indent=1, ensure_ascii=False))
    skipped = {split: sum(not mode.accepts(label) for label in setup.manifest["splits"][split]["labels"])
               for split in ("train", "validation")}
    if any(skipped.values()):
        print(f"skipping {skipped['train']} training and {skipped['validation']} validation labels that this "
              f"model cannot learn (symbols outside CHARSET, or longer than {mode.label_width}); "
              "check_file.py lists them")
    started = time.monotonic()
    # With a --minutes budget the budget decides how long training runs, not an epoch count.
    epochs = MAX_EPOCHS if minutes else settings["EPOCHS"]
    if verbose == "auto" and not sys.stdout.isatty():
        verbose, extra_callbacks = 0, [*extra_callbacks, callbacks.EpochLine()]
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose,
                        callbacks=[*callbacks.training_callbacks(workspace.checkpoints, workspace.logs, best_path,
                                                                   settings, mode, val, minutes),
                                   *([pseudo] if pseudo else []), *extra_callbacks])
    csv_path = workspace.logs / "training.csv"
    if csv_path.exists():
        plot_curves(csv_path, workspace.logs / "training_curves.png", mode.monitor)
    scores = history.history.get(mode.monitor, [])
    return {"epochs_run": len(scores), "monitor": mode.monitor, "best": max(scores, default=None),
            "seconds": round(time.monotonic() - started, 1), "charset_size": len(mode.charset.symbols),
            "label_width": mode.label_width, "resumed": resuming, "skipped": skipped,
            "pseudo_labels": None if pseudo is None else len(pseudo.chosen[0]), "weights": weights_digest(model)}


def pseudo_labeller(workspace: Workspace, settings: Mapping[str, Any], setup: Setup, val: tuple[Any, ...]) -> Any:
    """The callback that trains on data/unlabelled and SYNTHETIC's drawn captchas too
    (capforge.pseudo_labels), or None: the mode learns from neither, UNLABELLED = 'off' and none
    were drawn, or training is distributed."""
    splits = setup.manifest["splits"]
    unlabelled = splits.get("unlabelled", {}).get("count", 0) if settings.get("UNLABELLED") == "pseudo" else 0
    drawn = splits.get("synthetic", {}).get("count", 0)
    if not (setup.mode.learns_unlabelled and (unlabelled or drawn)):
        return None
    if settings["DISTRIBUTE"] != "none":  # each replica would relabel on its own: not built yet
        print(f"data/unlabelled and data/synthetic are not learnt from with DISTRIBUTE = {settings['DISTRIBUTE']!r} "
              "(only 'none')")
        return None
    from capforge.pseudo_labels import PseudoLabels

    images = load_images(workspace, setup.manifest, "unlabelled") if unlabelled else val[0][:0]
    if unlabelled:
        print(f"learning from {len(images)} unlabelled images too (UNLABELLED = 'pseudo')")
    synthetic = load_arrays(workspace, setup.manifest, "synthetic", setup.mode)[:2] if drawn else None
    if synthetic:
        print(f"learning from {len(synthetic[0])} drawn captchas until the model reads (SYNTHETIC)")
    teacher = None
    if settings.get("PSEUDO_TEACHER", "none") == "ddddocr":
        from capforge.serve.ddddocr_reader import DdddocrReader

        teacher = DdddocrReader()
    return PseudoLabels(setup.mode, images, val[:2], label_lengths(setup.mode, splits["train"]["labels"]),
                        settings["PSEUDO_PRECISION"], settings["SEED"], teacher,
                        str if settings["CASE_SENSITIVE"] else str.lower, synthetic)


def weights_digest(model: Any) -> str:
    """A short digest of the trained weights (the ones the optimizer steps; the same on every
    worker of one multi-machine run, which is how a user sees that they trained one model)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha1()
    for weight in model.trainable_weights:
        digest.update(np.asarray(weight.value).tobytes())
    return digest.hexdigest()[:16]
