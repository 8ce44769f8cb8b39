"""The bundle a Jetson runs: model.onnx + model.json (+ threshold.json, engines/).

export/ writes bundles through `write_metadata`; everything else opens them with `open_bundle`,
which refuses a missing, corrupt, foreign or mismatched file with a message naming the file and
the fix.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata as package_metadata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_write_json
from runtime.errors import BundleError
from runtime.preprocess import PreprocessConfig

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
METADATA_FILE = "model.json"
THRESHOLD_FILE = "threshold.json"
ENGINES_DIR = "engines"
INPUT_NAME = "frames"
OUTPUT_NAMES = ("score", "anomaly_map")
PART_ROLES = ("backbone", "head")  # the graphs a bundle `daad teach` made carries beside model.onnx


@dataclass
class BundleMetadata:
    """What model.json holds: enough to feed the graph and to know what it was trained for."""

    onnx_sha256: str
    preprocess: dict[str, Any]
    model_kind: str
    model_config: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    input_name: str = INPUT_NAME
    input_shape: list[Any] = field(default_factory=list)  # ["batch", H, W, C]; batch may be an int
    input_dtype: str = "uint8"
    channel_order: str = "BGR"
    output_names: list[str] = field(default_factory=lambda: list(OUTPUT_NAMES))
    score_definition: str = ""
    opset: int = 17
    training: dict[str, Any] = field(default_factory=dict)
    model_stats: dict[str, Any] = field(default_factory=dict)  # parameters, flops_per_image
    # min, median, max of the exported graph's scores on the parity images: what a threshold must be near
    score_stats: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    package_version: str = ""
    exporter: dict[str, Any] = field(default_factory=dict)
    # Graphs beside model.onnx that together compute it (a taught bundle's backbone and memory
    # head, docs/TEACH.md): role -> {"file", "sha256"}; empty for every exported bundle.
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BundleMetadata":
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class Bundle:
    """An opened, verified bundle folder."""

    root: Path
    metadata: BundleMetadata

    @property
    def onnx_path(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def threshold_path(self) -> Path:
        return self.root / THRESHOLD_FILE

    @property
    def engines_dir(self) -> Path:
        return self.root / ENGINES_DIR

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.metadata.preprocess_config

    @property
    def sha256(self) -> str:
        return self.metadata.onnx_sha256


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_version(name: str = "daad-edge") -> str:
    """The installed version of `name` for model.json ("unknown" when it is not installed)."""
    try:
        return package_metadata.version(name)
    except package_metadata.PackageNotFoundError:
        return "unknown"


def write_metadata(root: str | Path, metadata: BundleMetadata) -> Path:
    """Write model.json atomically (export/ calls this after model.onnx is in place)."""
    return atomic_write_json(Path(root) / METADATA_FILE, metadata.to_dict())


def read_metadata(root: str | Path) -> BundleMetadata:
    path = Path(root) / METADATA_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: this is not a daad bundle. Create one with `daad export`.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is corrupt ({exc}): re-export the bundle with `daad export`.") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} is corrupt (not a JSON object): re-export the bundle with `daad export`.")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format version {version!r}; this daad-edge reads version {FORMAT_VERSION}. "
            "Re-export the bundle with this version of daad-edge, or install the version that wrote it."
        )
    try:
        metadata = BundleMetadata.from_dict(data)
    except TypeError as exc:
        raise BundleError(f"{path} lacks required fields ({exc}): re-export the bundle with `daad export`.") from exc
    problem = inconsistency(metadata)
    if problem:
        raise BundleError(f"{path} {problem}: the file was edited or damaged; re-export the bundle with `daad export`.")
    return metadata


def inconsistency(metadata: BundleMetadata) -> str:
    """What in model.json contradicts itself or the frame contract ("" when nothing does)."""
    try:
        config = metadata.preprocess_config
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # size, channels, crop, mean/std out of range
        return f"has an impossible preprocess ({exc})"
    if metadata.input_shape and list(metadata.input_shape[1:]) != list(config.shape):
        return f"gives input_shape {metadata.input_shape} but preprocess {list(config.shape)} (H, W, C)"
    if metadata.channel_order != config.channel_order:
        return f"gives channel_order {metadata.channel_order} for {config.channels} channel(s)"
    if metadata.input_dtype != "uint8":
        return f"gives input_dtype {metadata.input_dtype!r}; the frame contract is uint8"
    if not set(OUTPUT_NAMES) <= set(metadata.output_names):
        return f"gives output_names {metadata.output_names}; a daad model has {list(OUTPUT_NAMES)}"
    return ""


def check_model_io(bundle: Bundle, model_file: Path, input_name: str, input_shape: tuple, output_names: list[str]) -> None:
    """Refuse a model file whose tensors are not the ones model.json describes, before any frame is scored.

    `input_shape` is the model's N x H x W x C, with None or a name where a dimension is dynamic.
    """
    metadata, where = bundle.metadata, bundle.root / METADATA_FILE
    fixed = [(index, size) for index, size in enumerate(input_shape[1:]) if isinstance(size, int) and size > 0]
    problems = []
    if input_name != metadata.input_name:
        problems.append(f"input {metadata.input_name!r} where {model_file} has {input_name!r}")
    if any(size != bundle.preprocess.shape[index] for index, size in fixed):
        problems.append(f"frames of {list(bundle.preprocess.shape)} where {model_file} takes {list(input_shape[1:])}")
    if sorted(output_names) != sorted(metadata.output_names):
        problems.append(f"outputs {metadata.output_names} where {model_file} has {output_names}")
    if problems:
        raise BundleError(f"{where} describes {'; '.join(problems)}: model.json was edited or belongs to another "
                          "model; re-export the bundle with `daad export`.")


def has_parts(metadata: BundleMetadata) -> bool:
    """Whether model.json lists a backbone and a head part (a bundle taught by `daad teach`)."""
    return all(isinstance(metadata.parts.get(role), dict) for role in PART_ROLES)


def listed_parts(bundle: Bundle) -> dict[str, tuple[Path, str]]:
    """role -> (file, sha256) of the part graphs model.json lists; refused for a bundle without them."""
    if not has_parts(bundle.metadata):
        raise BundleError(f"{bundle.root / METADATA_FILE} lists no backbone and head parts: only bundles taught by "
                          "`daad teach` have them; run this bundle's model.onnx instead")  # fmt: skip
    parts = bundle.metadata.parts
    return {role: (bundle.root / str(parts[role].get("file", "")), str(parts[role].get("sha256", "")))
            for role in PART_ROLES}  # fmt: skip


def checked_parts(bundle: Bundle) -> dict[str, Path]:
    """role -> file of each part graph, each checked against the sha256 model.json records."""
    paths = {}
    for role, (path, sha256) in listed_parts(bundle).items():
        if not path.is_file() or file_sha256(path) != sha256:
            raise BundleError(f"{path} is missing or does not match {bundle.root / METADATA_FILE} (sha256): the part "
                              "was changed or copied from another bundle; teach the product again with `daad teach`")
        paths[role] = path
    return paths


def open_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle folder; with `verify`, check model.onnx against the sha256 in model.json."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"bundle folder {root} does not exist: create it with `daad export --out {root}`.")
    metadata = read_metadata(root)
    onnx_path = root / MODEL_FILE
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path} is missing: re-export the bundle with `daad export`.")
    if verify:
        actual = file_sha256(onnx_path)
        if actual != metadata.onnx_sha256:
            raise BundleError(
                f"{onnx_path} does not match {root / METADATA_FILE} (sha256 {actual[:12]}… on disk, "
                f"{metadata.onnx_sha256[:12]}… recorded): the file was changed, truncated or copied from "
                "another bundle. Re-export the bundle with `daad export`."
            )
    return Bundle(root=root, metadata=metadata)
