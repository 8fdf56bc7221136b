"""Checkpoints as safetensors: weights, optimizer state and training state, no pickle.

Loading a checkpoint never executes code (safetensors holds tensors and a str→str header).
The model configuration and the training state live in that header as JSON, so a file is
self-describing: ``load_model(path)`` rebuilds the network with nothing else.

Layout: tensors ``model.<name>`` (weights), ``optim.<group>.<param>.<key>`` (Adam moments),
``ema.<name>`` (exponential moving average of the weights, when training keeps one),
``rng.torch`` (CPU generator state); header keys ``format``, ``config``, ``config_name``,
``train_state``, ``optim_groups``, ``rng_numpy``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime.errors import UpscaleError
from runtime.utils import file_sha256
from train.models.eusr import EUSR, EUSRConfig

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "restore_grad_scaler",
    "load_checkpoint",
    "load_model",
    "model_config",
    "load_state_into",
    "restore_optimizer",
    "file_sha256",
]

FORMAT = "fourpp-eusr-checkpoint/1"


class CheckpointError(UpscaleError, RuntimeError):
    """A checkpoint file is missing, damaged or does not fit what it is loaded into."""


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    config_name: str
    model_state: dict[str, torch.Tensor]
    train_state: dict[str, Any] = field(default_factory=dict)
    optim_state: dict[str, torch.Tensor] = field(default_factory=dict)
    ema_state: dict[str, torch.Tensor] = field(default_factory=dict)
    optim_groups: list[dict[str, Any]] = field(default_factory=list)
    rng_torch: torch.Tensor | None = None
    rng_numpy: dict[str, Any] | None = None
    kind: str = "eusr"
    grad_scaler: dict[str, Any] | None = None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{pid}.{key}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    config: dict[str, Any],
    config_name: str = "custom",
    kind: str = "eusr",
    optimizer: torch.optim.Optimizer | None = None,
    train_state: dict[str, Any] | None = None,
    numpy_rng: np.random.Generator | None = None,
    ema_state: dict[str, torch.Tensor] | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write atomically (temp file + os.replace): a crash never leaves half a checkpoint.

    ``grad_scaler``: an enabled AMP scaler's state (loss scale, growth tracker) goes into the
    header, so an ``--amp`` run resumes with the scale it had, not from 65536 again.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "kind": kind,
        "config": json.dumps(config, sort_keys=True),
        "config_name": config_name,
        "train_state": json.dumps(train_state or {}, sort_keys=True),
    }
    if optimizer is not None:
        optim_tensors, groups = _optimizer_tensors(optimizer)
        tensors.update(optim_tensors)
        header["optim_groups"] = json.dumps(groups)
        tensors["rng.torch"] = torch.get_rng_state()
    if ema_state:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema_state.items()})
    if numpy_rng is not None:
        header["rng_numpy"] = json.dumps(numpy_rng.bit_generator.state)
    if grad_scaler is not None and grad_scaler.is_enabled():
        header["grad_scaler"] = json.dumps(grad_scaler.state_dict())
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 (and save_file keeps it); a checkpoint is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, *, expect_kind: str | None = "eusr") -> Checkpoint:
    """Read a checkpoint; any problem raises CheckpointError naming the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty (0 bytes); expected a safetensors checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors checkpoint ({e}); the file may be truncated or of another format"
        ) from None
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: header format is {header.get('format')!r}, expected {FORMAT!r} "
            "(was it written by train.checkpoint.save_checkpoint?)"
        )
    kind = header.get("kind", "eusr")
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(f"{path}: holds a {kind!r} model, expected a {expect_kind!r} checkpoint")
    try:
        config = json.loads(header["config"])
        train_state = json.loads(header.get("train_state", "{}"))
        groups = json.loads(header["optim_groups"]) if "optim_groups" in header else []
        rng_numpy = json.loads(header["rng_numpy"]) if "rng_numpy" in header else None
        grad_scaler = json.loads(header["grad_scaler"]) if "grad_scaler" in header else None
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: damaged header ({e})") from None
    return Checkpoint(
        path=path,
        config=config,
        config_name=header.get("config_name", "custom"),
        model_state={k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        train_state=train_state,
        optim_state={k: v for k, v in tensors.items() if k.startswith("optim.")},
        ema_state={k[4:]: v for k, v in tensors.items() if k.startswith("ema.")},
        optim_groups=groups,
        rng_torch=tensors.get("rng.torch"),
        rng_numpy=rng_numpy,
        kind=kind,
        grad_scaler=grad_scaler,
    )


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path, *, assign: bool = False) -> None:
    """load_state_dict(strict) with a message that lists what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with other shapes (e.g. {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
            )
        raise CheckpointError(f"{path}: weights do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True, assign=assign)


def restore_grad_scaler(scaler: torch.amp.GradScaler, ckpt: Checkpoint) -> bool:
    """Give an enabled AMP scaler the state saved with ``ckpt``; False when there is none to
    restore (AMP off now, or the checkpoint was written without AMP: the scale starts anew)."""
    if not scaler.is_enabled() or not ckpt.grad_scaler:
        return False
    scaler.load_state_dict(ckpt.grad_scaler)
    return True


def restore_optimizer(optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    """Put Adam moments and step counts back so a resumed run continues exactly."""
    if not ckpt.optim_groups:
        raise CheckpointError(f"{ckpt.path}: holds no optimizer state; cannot resume from it")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in ckpt.optim_state.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    current = optimizer.state_dict()
    if len(current["param_groups"]) != len(ckpt.optim_groups):
        raise CheckpointError(f"{ckpt.path}: optimizer has a different number of parameter groups")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": ckpt.optim_groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: optimizer state does not fit ({e})") from None


def model_config(ckpt: Checkpoint) -> EUSRConfig:
    """The EUSRConfig stored in a checkpoint's header."""
    try:
        return EUSRConfig.from_dict(ckpt.config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path}: invalid model config in header ({e})") from None


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu", weights: str = "auto") -> EUSR:
    """Rebuild the EUSR stored in a checkpoint, weights loaded, in eval mode.

    ``weights``: "auto" takes the moving average of the weights when the checkpoint has
    one (what a run is evaluated and exported with), else the raw weights; "ema" or "raw"
    insist on one.
    """
    if weights not in ("auto", "ema", "raw"):
        raise ValueError(f"weights must be 'auto', 'ema' or 'raw', got {weights!r}")
    ckpt = load_checkpoint(path)
    if weights == "ema" and not ckpt.ema_state:
        raise CheckpointError(f"{ckpt.path}: holds no moving-average weights (train with --ema to keep them)")
    state = ckpt.ema_state if ckpt.ema_state and weights != "raw" else ckpt.model_state
    config = model_config(ckpt)
    # Built on the meta device: the weights are about to be replaced, so running the
    # (slow, for the paper config) initialisers would be wasted work.
    with torch.device("meta"):
        model = EUSR(config)
    load_state_into(model, state, ckpt.path, assign=True)
    model.reset_buffers()
    return model.to(device).eval()
