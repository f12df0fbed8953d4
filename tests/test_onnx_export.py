"""Recurrent heads exported as native ONNX GRU/LSTM nodes answer exactly like Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from capforge.onnx_export import export_onnx


def sequence_model(recurrent: list, rng: np.random.Generator):
    import keras
    from keras import layers

    inputs = keras.Input((8, 24, 1), name="image")
    x = layers.Conv2D(4, 3, strides=(2, 2), padding="same", activation="relu")(inputs)
    x = layers.Reshape((12, 16))(layers.Permute((2, 1, 3))(x))
    x = layers.Dropout(0.2)(layers.Dense(10, activation="relu")(x))
    for layer in recurrent:
        x = layer(x)
    model = keras.Model(inputs, layers.Dense(7, activation="softmax")(x))
    # random biases too, so a gate or bias put in the wrong place shows
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def onnx_answer(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def test_bidirectional_gru_lstm_and_plain_gru_become_native_nodes(tmp_path: Path) -> None:
    from keras import layers

    rng = np.random.default_rng(0)
    model = sequence_model([layers.Bidirectional(layers.GRU(8, return_sequences=True)),
                            layers.Bidirectional(layers.LSTM(6, return_sequences=True)),
                            layers.GRU(5, return_sequences=True)], rng)
    batch = rng.random((5, 8, 24, 1), dtype=np.float32)
    assert export_onnx(model, tmp_path / "m.onnx") == "native recurrent"
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert {"GRU", "LSTM"} <= ops and "Loop" not in ops
    got = onnx_answer(tmp_path / "m.onnx", batch)
    expected = np.asarray(model.predict_on_batch(batch))
    assert got.shape == expected.shape == (5, 12, 7)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_head_it_cannot_translate_is_exported_by_keras_unchanged(tmp_path: Path) -> None:
    from keras import layers

    rng = np.random.default_rng(1)
    model = sequence_model([layers.GRU(8, return_sequences=True, reset_after=False)], rng)
    batch = rng.random((3, 8, 24, 1), dtype=np.float32)
    assert export_onnx(model, tmp_path / "m.onnx") == "keras"
    np.testing.assert_allclose(onnx_answer(tmp_path / "m.onnx", batch), np.asarray(model.predict_on_batch(batch)),
                               atol=1e-5)
