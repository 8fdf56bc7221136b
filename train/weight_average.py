"""Exponential moving average of a model's weights (``--ema`` of phases 1 and 3)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["WeightAverage", "swapped_in"]


class WeightAverage:
    """Exponential moving average of a model's floating-point state (weights and buffers)."""

    def __init__(self, model: torch.nn.Module, decay: float, state: dict[str, torch.Tensor] | None = None) -> None:
        self.decay = decay
        own = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        if state:
            if set(state) != set(own):
                raise SystemExit("error: the checkpoint's moving-average weights do not match the model")
            own = {k: state[k].to(own[k].device, own[k].dtype).clone() for k in own}
        self.state = own

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        current = model.state_dict()
        for k, avg in self.state.items():
            avg.lerp_(current[k].detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Run the block with the averaged weights, then put the live ones back."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.state}
        model.load_state_dict(self.state, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(live, strict=False)


def swapped_in(average: WeightAverage | None, model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """``average.swapped_in(model)``, or nothing to swap when the run keeps no average."""
    return average.swapped_in(model) if average is not None else contextlib.nullcontext(model)
