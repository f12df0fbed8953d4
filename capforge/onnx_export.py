"""Keras -> ONNX, with recurrent layers as native ONNX GRU/LSTM operators.

Keras' ONNX export turns a recurrent layer into a ``Loop`` that runs a few dozen small operators
per time step; onnxruntime spends most of a CRNN's time in that bookkeeping. When a model ends in
a plain chain of ``Bidirectional``/``GRU``/``LSTM``, ``Dense`` and ``Dropout`` layers (the text
heads capforge builds), the part before the chain is exported by Keras and the chain is appended
as ONNX ``GRU``/``LSTM``/``MatMul`` nodes from the same weights. Anything else is exported by Keras
as it is. The export's parity check compares the result with Keras either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ACTIVATIONS = {"linear": None, "relu": "Relu", "softmax": "Softmax", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def export_onnx(model: Any, path: Path) -> str:
    """Write ``model`` to ``path`` as ONNX; return "native recurrent" or "keras"."""
    probe = np.zeros((1, *model.inputs[0].shape[1:]), np.float32)
    model(probe)  # Keras exports traced models only
    chain = recurrent_tail(model)
    if chain is None:
        model.export(str(path), format="onnx", verbose=False)
        return "keras"
    import keras
    import onnx

    trunk = keras.Model(model.inputs[0], chain[0].input)
    trunk(probe)
    trunk.export(str(path), format="onnx", verbose=False)
    graph_model = onnx.load(str(path))
    _append_chain(graph_model.graph, chain)
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))
    return "native recurrent"


def _cell(layer: Any) -> Any:
    """The GRU/LSTM inside ``layer`` (itself, or the forward layer of a Bidirectional)."""
    from keras import layers

    return layer.forward_layer if isinstance(layer, layers.Bidirectional) else layer


def _convertible(layer: Any) -> bool:
    from keras import layers

    if isinstance(layer, layers.Dropout):
        return True
    if isinstance(layer, layers.Dense):
        return layer.activation.__name__ in ACTIVATIONS and layer.use_bias
    if isinstance(layer, layers.Bidirectional):
        if layer.merge_mode != "concat" or not layer.return_sequences:
            return False
    rnn = _cell(layer)
    if isinstance(rnn, layers.GRU):
        ok = rnn.reset_after and rnn.cell.activation.__name__ == "tanh" \
            and rnn.cell.recurrent_activation.__name__ == "sigmoid"
    elif isinstance(rnn, layers.LSTM):
        ok = rnn.cell.activation.__name__ == "tanh" and rnn.cell.recurrent_activation.__name__ == "sigmoid"
    else:
        return False
    return ok and rnn.return_sequences and rnn.use_bias and not rnn.go_backwards and not rnn.stateful


def recurrent_tail(model: Any) -> list[Any] | None:
    """The layers from the first recurrent layer to the output, if they form a convertible chain."""
    from keras import layers

    chain: list[Any] = []
    for layer in model.layers:
        if chain or isinstance(_cell(layer), (layers.GRU, layers.LSTM)):
            chain.append(layer)
    if not chain or len(model.inputs) != 1 or len(model.outputs) != 1 or chain[-1].output is not model.outputs[0]:
        return None
    try:
        linked = all(later.input is earlier.output for earlier, later in zip(chain, chain[1:]))
    except (AttributeError, ValueError):  # a layer called more than once has no single input
        return None
    return chain if linked and all(_convertible(layer) for layer in chain) else None


class _Builder:
    """Appends nodes and constant weights to an ONNX graph under unique names."""

    def __init__(self, graph: Any) -> None:
        self.graph, self.count = graph, 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"capforge_{stem}_{self.count}"

    def constant(self, value: np.ndarray, stem: str) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes: Any) -> str:
        from onnx import helper

        output = self.name(op.lower())
        self.graph.node.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def _gate_weights(cell: Any, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX W, R, B of one direction. Keras orders GRU gates z,r,h (as ONNX) and LSTM gates
    i,f,c,o (ONNX: i,o,f,c)."""
    kernel, recurrent, bias = (np.asarray(w, np.float32) for w in cell.get_weights())
    if kind == "GRU":
        return kernel.T, recurrent.T, bias.reshape(-1)  # reset_after: bias rows are input, recurrent
    units = recurrent.shape[0]

    def reorder(matrix: np.ndarray) -> np.ndarray:
        i, f, c, o = np.split(matrix, 4, axis=-1)
        return np.concatenate([i, o, f, c], axis=-1)

    return reorder(kernel).T, reorder(recurrent).T, np.concatenate([reorder(bias), np.zeros(4 * units, np.float32)])


def _recurrent(b: _Builder, x: str, layer: Any) -> str:
    """[T, B, F] -> [T, B, directions * units] through one ONNX GRU/LSTM node."""
    from keras import layers

    kind = "GRU" if isinstance(_cell(layer), layers.GRU) else "LSTM"
    directions = [layer.forward_layer, layer.backward_layer] if isinstance(layer, layers.Bidirectional) else [layer]
    weights = [_gate_weights(d, kind) for d in directions]
    w, r, bias = (b.constant(np.stack([part[i] for part in weights]), f"{kind}_{role}")
                  for i, role in enumerate("WRB"))
    units = directions[0].units
    attributes: dict[str, Any] = {"hidden_size": units,
                                  "direction": "bidirectional" if len(directions) == 2 else "forward"}
    if kind == "GRU":
        attributes["linear_before_reset"] = 1
    y = b.node(kind, [x, w, r, bias], **attributes)  # [T, directions, B, units]
    y = b.node("Transpose", [y], perm=[0, 2, 1, 3])
    return b.node("Reshape", [y, b.constant(np.array([0, 0, -1], np.int64), "shape")])


def _append_chain(graph: Any, chain: list[Any]) -> None:
    """Replace the graph's output with ``chain`` applied to it."""
    from keras import layers
    from onnx import TensorProto, helper

    b = _Builder(graph)
    trunk_output = graph.output[0].name
    x = b.node("Transpose", [trunk_output], perm=[1, 0, 2])  # time-major for the recurrent nodes
    time_major = True
    for layer in chain:
        if isinstance(layer, layers.Dropout):
            continue
        if isinstance(layer, layers.Dense):
            if time_major:
                x, time_major = b.node("Transpose", [x], perm=[1, 0, 2]), False
            kernel, bias = (np.asarray(w, np.float32) for w in layer.get_weights())
            x = b.node("Add", [b.node("MatMul", [x, b.constant(kernel, "kernel")]), b.constant(bias, "bias")])
            activation = ACTIVATIONS[layer.activation.__name__]
            if activation:
                x = b.node(activation, [x], **({"axis": -1} if activation == "Softmax" else {}))
            continue
        if not time_major:
            x, time_major = b.node("Transpose", [x], perm=[1, 0, 2]), True
        x = _recurrent(b, x, layer)
    if time_major:
        x = b.node("Transpose", [x], perm=[1, 0, 2])
    batch_major = helper.make_tensor_value_info(x, TensorProto.FLOAT, [None, None, None])
    del graph.output[:]
    graph.output.append(batch_major)
