import pytest

from capforge.errors import SettingsError
from capforge.models.backbones import BACKBONES, build_backbone
from capforge.settings import BACKBONES as SETTING_CHOICES


def test_registry_and_settings_agree() -> None:
    assert tuple(BACKBONES) == SETTING_CHOICES


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_with_enough_time_steps(name: str) -> None:
    features = build_backbone(name, (32, 96, 1), "sequence").output
    assert len(features.shape) == 4 and features.shape[2] >= 96 // 8


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(SettingsError, match="allowed: small_cnn, densenet121"):
        build_backbone("resnet9000", (32, 96, 1))
