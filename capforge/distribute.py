"""Training on several devices or machines (the DISTRIBUTE setting), on TensorFlow's own engine.

With ``DISTRIBUTE = 'multi_worker'`` every machine runs the same ``train.py`` with its own
``TF_CONFIG``; they train one model together. Only the chief (``chief`` 0, or ``worker`` 0 when
the cluster names no chief) writes checkpoints, logs and the export: the others write theirs to a
scratch folder that is removed afterwards (Keras 3 no longer does this itself, as Keras 2 did).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capforge.errors import SettingsError
from capforge.workspace import Workspace


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in TF_CONFIG's cluster."""

    kind: str
    index: int
    chief: bool

    def __str__(self) -> str:
        return f"{self.kind} {self.index}"


def worker_role(distribute: str) -> WorkerRole:
    """The role TF_CONFIG gives this process (the chief, when not training on several machines)."""
    if distribute != "multi_worker":
        return WorkerRole("chief", 0, True)
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise SettingsError("DISTRIBUTE='multi_worker' needs the TF_CONFIG environment variable, e.g. "
                            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                            '"task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(text)
        kind, index = str(config["task"]["type"]), int(config["task"]["index"])
        cluster = config["cluster"]
        if kind not in cluster or not 0 <= index < len(cluster[kind]):
            raise KeyError(f"{kind} {index} is not in the cluster")
    except (ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"TF_CONFIG is not a cluster description ({type(exc).__name__}: {exc}); it "
                            "needs 'cluster' (lists of host:port per task type) and 'task' (type and index)") from None
    return WorkerRole(kind, index, kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster))


def distribution_strategy(name: str) -> Any:
    """The tf.distribute strategy for DISTRIBUTE."""
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        worker_role(name)  # a clear error for a missing or broken TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def fit_across_machines(model: Any, strategy: Any) -> None:
    """Let ``model.fit`` run under MultiWorkerMirroredStrategy, which Keras 3.15 breaks twice
    (tensorflow/tensorflow#72388): it reduces the first (images, labels) batch with one
    ``strategy.reduce`` call, which this strategy refuses for a pair, and it averages each scalar
    log "along axis 0", which a scalar has not. The build only needs the batch's shapes (this
    machine's part gives them); a scalar log is averaged over the machines as a whole."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def build(iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = build
    keras_reduce = getattr(trainer.reduce_per_replica, "keras_original", trainer.reduce_per_replica)

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean"):
            scalars = tf.nest.map_structure(lambda v: v.shape.rank == 0, values)
            return tf.nest.map_structure(
                lambda v, scalar: strategy.reduce("MEAN", v, axis=None) if scalar
                else keras_reduce(v, strategy, reduction), values, scalars)
        return keras_reduce(values, strategy, reduction)

    reduce_per_replica.keras_original = keras_reduce  # type: ignore[attr-defined]
    trainer.reduce_per_replica = reduce_per_replica


@dataclass(frozen=True)
class WorkerWorkspace(Workspace):
    """A non-chief worker's view of a workspace: its data, but checkpoints and logs in ``scratch``."""

    scratch: Path = Path()

    @classmethod
    def of(cls, workspace: Workspace, scratch: Path) -> WorkerWorkspace:
        """Start from the workspace's own checkpoints (so --continue starts from the same weights)."""
        view = cls(workspace.root, scratch)
        if workspace.checkpoints.is_dir():
            shutil.copytree(workspace.checkpoints, view.checkpoints, dirs_exist_ok=True)
        return view

    @property
    def checkpoints(self) -> Path:
        return self.scratch / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.scratch / "logs"
