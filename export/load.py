"""The model an export starts from: a checkpoint (or an in-memory EUSR) and its provenance.

The exporter records where the network came from in the ONNX metadata (configuration
name, checkpoint SHA-256), so the checkpoint is hashed here, once, as it is loaded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from export.errors import ExportError
from runtime.utils import file_sha256
from train.checkpoint import CheckpointError, load_model
from train.models.eusr import CONFIGS, EUSR

__all__ = ["ModelSource", "load_source", "check_scale", "eval_mode"]


@dataclass(frozen=True)
class ModelSource:
    """A multi-scale EUSR and where it came from (for the metadata)."""

    model: EUSR
    config_name: str
    checkpoint: Path | None = None
    checkpoint_sha256: str | None = None


def _known_config_name(model: EUSR) -> str:
    for name, config in CONFIGS.items():
        if config == model.config:
            return name
    return "custom"


def _checkpoint_config_name(path: Path) -> str | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("config_name")
    except Exception:  # load_model has read the file already; the name is informational  # noqa: BLE001 - the library raises its own exception types
        return None


def load_source(
    model_or_checkpoint: EUSR | ModelSource | str | os.PathLike[str], *, config_name: str | None = None
) -> ModelSource:
    """An EUSR from a checkpoint path (``train.checkpoint.load_model``; raises
    ``CheckpointError``) or an in-memory model (``checkpoint_sha256`` is then None)."""
    if isinstance(model_or_checkpoint, ModelSource):
        return model_or_checkpoint
    if isinstance(model_or_checkpoint, EUSR):
        name = config_name or _known_config_name(model_or_checkpoint)
        return ModelSource(model=model_or_checkpoint, config_name=name)
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        path = Path(model_or_checkpoint)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        sha = file_sha256(path)
        model = load_model(path)
        name = config_name or _checkpoint_config_name(path) or _known_config_name(model)
        return ModelSource(model=model, config_name=name, checkpoint=path, checkpoint_sha256=sha)
    raise TypeError(f"expected an EUSR model or a checkpoint path, got {type(model_or_checkpoint).__name__}")


def check_scale(model: EUSR, scale: int) -> int:
    """``scale`` if the model has that path, else an :class:`ExportError` listing its scales."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in model.scales:
        raise ExportError(
            f"scale {scale!r} is not a path of this model; it has scales {list(model.scales)}; "
            f"pass one of them (--scale {' | '.join(map(str, model.scales))})"
        )
    return scale


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """eval() for an export or a check, the caller's mode restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.train(training)
