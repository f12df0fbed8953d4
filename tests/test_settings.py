from pathlib import Path

import pytest

from capforge.errors import SettingsError
from capforge.settings import default_of, load_settings, parse_override, render_settings_file, table

from conftest import run_script


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "settings.py").write_text(text)
    return tmp_path


def error_of(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, text), overrides)
    return str(info.value)


def test_rendered_file_loads_to_the_defaults_and_shows_every_option(tmp_path: Path) -> None:
    text = render_settings_file("site1", "ORDINARY", "0.0")
    settings = load_settings(write(tmp_path, text))
    for option in table("ORDINARY").values():
        expected = "ORDINARY" if option.name == "MODE" else default_of(option.name, "ORDINARY")
        assert settings[option.name] == expected
        if option.name != "MODE":
            assert f"# {option.name} = {expected!r}" in text
    assert settings.LR == 0.002 and settings.DATA_ENHANCEMENT  # the measured defaults
    assert "PHI" not in text and "CTC_DECODER" not in text  # other modes' own settings are not offered


def test_a_mode_declares_its_own_settings_and_only_it_may_set_them(tmp_path: Path) -> None:
    assert "# PHI = 0" in render_settings_file("clicks", "EFFICIENTDET", "0.0")
    assert load_settings(None, ["MODE=EFFICIENTDET", "PHI=1"]).PHI == 1
    message = error_of(tmp_path, "MODE = 'CTC'\nPHI = 1\n")
    assert "line 2: PHI is a setting of EFFICIENTDET; this workspace's MODE is CTC" in message
    assert "did you mean NMS_IOU?" in error_of(tmp_path, "MODE = 'EFFICIENTDET'\nNMS_IUO = 0.4\n")
    assert "CTC_DECODER" in table("CTC_TINY")  # a subclass keeps its parent mode's settings


def test_detection_has_its_own_defaults_and_size_rule(tmp_path: Path) -> None:
    text = render_settings_file("clicks", "EFFICIENTDET", "0.0")
    assert "# IMAGE_HEIGHT = 128" in text and "# IMAGE_CHANNELS = 3" in text
    settings = load_settings(write(tmp_path, text))
    assert (settings.IMAGE_HEIGHT, settings.IMAGE_WIDTH, settings.IMAGE_CHANNELS) == (128, 256, 3)
    assert "IMAGE_HEIGHT       = 128\n" in settings.describe()  # a mode default is not "changed"
    assert load_settings(None, ["MODE=EFFICIENTDET", "IMAGE_WIDTH=320"]).IMAGE_WIDTH == 320
    assert load_settings(None, ["MODE=CTC"]).IMAGE_HEIGHT == 48
    assert "# BACKBONE = 'tiny_cnn'" in render_settings_file("fast", "CTC_TINY", "0.0")
    assert load_settings(None, ["MODE=CTC_TINY"]).BACKBONE == "tiny_cnn"
    assert load_settings(None, ["MODE=CTC"]).BACKBONE == "small_cnn"
    message = error_of(tmp_path, "MODE = 'EFFICIENTDET'\nIMAGE_HEIGHT = 100\n")
    assert "multiple of 32" in message and "received 100" in message


def test_unknown_key_names_file_line_and_closest(tmp_path: Path) -> None:
    message = error_of(tmp_path, "MODE = 'CTC'\n\nEPOCSH = 3\n")
    assert "settings.py line 3" in message and "EPOCSH" in message and "did you mean EPOCHS" in message


def test_wrong_type_says_what_is_allowed(tmp_path: Path) -> None:
    message = error_of(tmp_path, "IMAGE_HEIGHT = '64px'\n")
    assert "line 1" in message and "an integer from 8 to 1024" in message and "'64px'" in message


def test_out_of_range_and_bad_choice(tmp_path: Path) -> None:
    assert "received 0.9" in error_of(tmp_path, "TEST_SPLIT = 0.9\n")
    message = error_of(tmp_path, "BACKBONE = 'resnet'\n")
    assert "one of 'small_cnn'" in message and "'resnet'" in message
    assert "True or False" in error_of(tmp_path, "CASE_SENSITIVE = 1\n")


def test_lower_case_name_and_syntax_error(tmp_path: Path) -> None:
    assert "did you mean EPOCHS" in error_of(tmp_path, "epochs = 3\n")
    assert "line 2: invalid Python" in error_of(tmp_path, "EPOCHS = 3\nLR = (\n")
    assert "line 1: NameError" in error_of(tmp_path, "EPOCHS = undefined_name\n")


def test_settings_that_must_agree(tmp_path: Path) -> None:
    assert "at least 10 %" in error_of(tmp_path, "TEST_SPLIT = 0.5\nVALIDATION_SPLIT = 0.45\n")
    assert "repeated: 'a'" in error_of(tmp_path, "CHARSET = 'abca'\n")


def test_overrides_are_literals_or_text() -> None:
    assert parse_override("LR=0.01") == ("LR", 0.01)
    assert parse_override("MODE=CTC") == ("MODE", "CTC")
    settings = load_settings(None, ["CHARSET=123", "DATA_ENHANCEMENT=False", "EPOCHS=5"])
    assert settings.CHARSET == "123" and settings.DATA_ENHANCEMENT is False and settings.EPOCHS == 5
    with pytest.raises(SettingsError, match="KEY=VALUE"):
        parse_override("EPOCHS")
    with pytest.raises(SettingsError, match="--set EPOCHS=zero: EPOCHS must be an integer"):
        load_settings(None, ["EPOCHS=zero"])


def test_typo_in_set_fails_cleanly_from_a_script(workspace: Path) -> None:
    result = run_script(workspace, "train.py", "--set", "EPOCSH=3")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --set EPOCSH=3: unknown setting EPOCSH; "
                                     "did you mean EPOCHS?")


def test_settings_command_prints_resolved_values(workspace: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "capforge", "settings", str(workspace),
                             "--set", "EPOCHS=3"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "EPOCHS             = 3   (changed)" in result.stdout
    assert "CHARSET            = '0123456789'   (changed)" in result.stdout
