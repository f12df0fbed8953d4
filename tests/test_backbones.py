import pytest

from capforge.errors import SettingsError
from capforge.models.backbones import BACKBONES, CPU_FIGURES, build_backbone, cpu_warning
from capforge.settings import load_settings


def test_the_setting_accepts_every_registered_backbone_and_names_them_when_wrong() -> None:
    for name in BACKBONES:
        assert load_settings(None, [f"BACKBONE={name!r}"]).BACKBONE == name
    with pytest.raises(SettingsError, match="'small_cnn', 'tiny_cnn'"):
        load_settings(None, ["BACKBONE='resnet9000'"])


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_with_enough_time_steps(name: str) -> None:
    features = build_backbone(name, (32, 96, 1), "sequence").output
    assert len(features.shape) == 4 and features.shape[2] >= 96 // 8


def test_whole_image_classes_get_a_wider_square_small_cnn() -> None:
    from capforge.models.backbones import CLASSES_WIDENING, CNN_WIDTHS

    text = build_backbone("small_cnn", (64, 64, 3), "sequence").output.shape
    classes = build_backbone("small_cnn", (64, 64, 3), "classes").output.shape
    last = CNN_WIDTHS["small_cnn"][-1]
    assert text[1:] == (4, 8, last)  # text keeps W/8 columns for CTC
    assert classes[1:] == (4, 4, CLASSES_WIDENING * last)  # a photo is pooled alike both ways


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(SettingsError, match="allowed: small_cnn, tiny_cnn, densenet121"):
        build_backbone("resnet9000", (32, 96, 1))


def test_efficientnet_exports_to_onnx_without_captured_inputs(tmp_path) -> None:
    """keras.applications' EfficientNet Normalization layer used to leave its statistics as
    extra ONNX inputs; the backbone is cut after it, so the export takes the image alone."""
    import numpy as np
    import onnxruntime as ort

    model = build_backbone("efficientnet_b0", (32, 96, 1), "sequence")
    image = np.random.default_rng(0).random((2, 32, 96, 1), dtype=np.float32)
    expected = np.asarray(model(image, training=False))
    model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    got = session.run(None, {"image": image})[0]
    assert np.abs(got - expected).max() < 1e-3


def test_fused_batch_normalization_trains_like_keras_and_reloads(tmp_path) -> None:
    """The small CNN's fused training kernel normalises as Keras does, keeps the moving
    statistics alike (its variance carries Bessel's n/(n-1)), and a saved model reloads it."""
    import keras
    import numpy as np

    from capforge.models.backbones import fused_batch_normalization

    x = np.random.default_rng(0).random((8, 6, 10, 5), dtype=np.float32) * 3 + 1
    fused, plain = fused_batch_normalization()(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    assert np.abs(np.asarray(fused(x, training=True)) - np.asarray(plain(x, training=True))).max() < 1e-5
    assert np.allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), atol=1e-6)
    n = 8 * 6 * 10
    assert np.allclose(fused.moving_variance.numpy() - 0.9, (plain.moving_variance.numpy() - 0.9) * n / (n - 1),
                       atol=1e-5)
    model = build_backbone("small_cnn", (32, 96, 1))
    model.save(tmp_path / "m.keras")
    assert any(type(layer).__name__ == "FusedBatchNormalization"
               for layer in keras.models.load_model(tmp_path / "m.keras").layers)


def test_a_backbone_a_cpu_cannot_train_is_named_before_training(workspace) -> None:
    """Every registered backbone either is one the CPU default trains (the small CNNs) or has its
    measured CPU figure, which check_file.py says before any training."""
    from conftest import run_script
    from clean_data import fill_pool

    assert set(BACKBONES) == {"small_cnn", "tiny_cnn", *CPU_FIGURES}
    assert cpu_warning("small_cnn") is None
    fill_pool(workspace / "data" / "pool", 10)
    with (workspace / "settings.py").open("a") as f:
        f.write("BACKBONE = 'densenet121'\n")
    out = run_script(workspace, "check_file.py").stdout
    assert ("note: BACKBONE = 'densenet121' needs a GPU or hours: on two CPU cores it read 0.000 in 2 epochs of "
            "5 minutes on a 6,000-image real set (rkn6)") in out, out
