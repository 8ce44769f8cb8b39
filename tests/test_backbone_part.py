"""The backbone part: written by `daad export --backbone`, refused when damaged or mismatched."""

from __future__ import annotations

import json

import pytest

from patchmemory.backbone_part import BACKBONE_FILE, BACKBONE_METADATA, read_backbone_part
from runtime.cli import main as daad
from runtime.errors import BundleError


def test_export_writes_a_part_teach_can_read(tmp_path, capsys) -> None:
    out = tmp_path / "part"
    assert daad(["export", "--backbone", "lite0", "--image-size", "32x48", "--channels", "1", "--out", str(out)]) == 0
    assert "teach a product from it" in capsys.readouterr().out
    part = read_backbone_part(out)
    assert part.grid == [4, 6] and part.stride == 8 and part.feature_dim == 40 + 112
    assert part.preprocess_config.channel_order == "GRAY" and part.opset == 17 and part.flops_per_image > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-size", "40x40"], "must be a multiple of 16"),
        ([], "--backbone needs --image-size"),
        (["--image-size", "32", "--levels", "s3"], "levels must be some of"),
    ],
)
def test_a_part_that_cannot_be_made_is_one_line(args, message, tmp_path, capsys) -> None:
    code = daad(["export", "--backbone", "lite0", "--out", str(tmp_path / "part"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "part" / BACKBONE_FILE).exists()


def test_a_changed_or_foreign_part_is_refused(backbone_part, tmp_path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / BACKBONE_METADATA).write_text((backbone_part / BACKBONE_METADATA).read_text())
    with pytest.raises(BundleError, match="backbone.onnx is missing"):
        read_backbone_part(copy)
    (copy / BACKBONE_FILE).write_bytes((backbone_part / BACKBONE_FILE).read_bytes()[:-10])
    with pytest.raises(BundleError, match="does not match"):
        read_backbone_part(copy)
    data = json.loads((backbone_part / BACKBONE_METADATA).read_text())
    (copy / BACKBONE_METADATA).write_text(json.dumps({**data, "format_version": 9}))
    with pytest.raises(BundleError, match="format version 9"):
        read_backbone_part(copy)
