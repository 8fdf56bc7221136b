"""Multi-scale EUSR (Kim & Lee, CVPRW 2018), the generator of 4PP-EUSR (Choi et al., 2019).

One network with ×2, ×4 and ×8 paths that share a first convolution and a large residual
module, each path with its own feature extraction, enhanced upscaling modules (EUM) and
output convolution. Layer for layer as ../shared/EUSR_SPEC.md; the default configuration
has 6,295,689 parameters (×2: 3,256,835, ×4: 3,699,971, ×8: 4,143,107).

Value range: inputs and outputs are RGB in [0, 255] (float). The network subtracts the
DIV2K mean and adds it back; it never clips, so outputs may leave [0, 255] slightly;
rounding and clipping belong to whoever writes an image.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "DIV2K_RGB_MEAN",
    "EUSRConfig",
    "CONFIGS",
    "EUSR",
    "EUSRPath",
    "LocalResidualBlock",
    "ResidualModule",
    "EnhancedUpscalingModule",
    "config_by_name",
    "build_eusr",
]

DIV2K_RGB_MEAN = (114.444, 111.461, 103.020)


def _lrb_init_std(fan_in: int) -> float:
    """Authors' init for convs inside local residual blocks: residual branches start ~0."""
    return math.sqrt(1.3 * (1e-4 / 62) / fan_in)


class LocalResidualBlock(nn.Module):
    """conv k×k → ReLU → conv k×k, plus the input."""

    def __init__(self, features: int, kernel: int = 3) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(features, features, kernel, padding=pad)
        self.conv2 = nn.Conv2d(features, features, kernel, padding=pad)
        self.act = nn.ReLU(inplace=True)
        for conv in (self.conv1, self.conv2):
            std = _lrb_init_std(conv.in_channels * kernel * kernel)
            nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class ResidualModule(nn.Module):
    """RM(n): n 3×3 local residual blocks, a 3×3 conv, plus the module input."""

    def __init__(self, features: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(LocalResidualBlock(features, 3) for _ in range(blocks)))
        self.conv = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.blocks(x))


class EnhancedUpscalingModule(nn.Module):
    """EUM: four RM(1) in cascade; their four outputs become the 2×2 sub-pixels.

    Output pixel (2h+i, 2w+j) takes tap y(2i+j+1)(h, w), TensorFlow's depth_to_space
    order, so the authors' weights could be ported: stacking taps on a new axis before
    PixelShuffle gives exactly that order.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(ResidualModule(features, 1) for _ in range(4))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = []
        for module in self.stages:
            x = module(x)
            taps.append(x)
        b, c, h, w = x.shape
        stacked = torch.stack(taps, dim=2).reshape(b, c * 4, h, w)
        return self.shuffle(stacked)


@dataclass(frozen=True, kw_only=True)
class EUSRConfig:
    """Hyperparameters of a multi-scale EUSR; stored in checkpoints and ONNX metadata."""

    features: int = 64
    shared_blocks: int = 32
    scale_blocks: int = 2
    scale_kernel: int = 5
    scales: tuple[int, ...] = (2, 4, 8)
    rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN

    def __post_init__(self) -> None:
        for name in ("features", "shared_blocks", "scale_blocks", "scale_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EUSRConfig.{name} must be a positive int, got {value!r}")
        if self.scale_kernel % 2 != 1:
            raise ValueError(f"EUSRConfig.scale_kernel must be odd, got {self.scale_kernel}")
        scales = tuple(int(s) for s in self.scales)
        if not scales or any(s < 2 or s & (s - 1) for s in scales) or len(set(scales)) != len(scales):
            raise ValueError(f"EUSRConfig.scales must be distinct powers of two >= 2, got {self.scales!r}")
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "rgb_mean", tuple(float(m) for m in self.rgb_mean))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EUSRConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown EUSRConfig fields {sorted(unknown)}; expected a subset of {sorted(known)}")
        kwargs = dict(data)
        for key in ("scales", "rgb_mean"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


CONFIGS: dict[str, EUSRConfig] = {
    # The paper's network: 6,295,689 parameters.
    "paper": EUSRConfig(),
    # The bundled CPU model: ~6× cheaper per pixel, trainable on two CPU cores.
    "compact": EUSRConfig(features=32, shared_blocks=8),
    # For tests: runs in milliseconds.
    "tiny": EUSRConfig(features=8, shared_blocks=2, scale_blocks=1, scale_kernel=3),
}


def config_by_name(name: str) -> EUSRConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown EUSR configuration {name!r}; choose one of {sorted(CONFIGS)}") from None


class EUSR(nn.Module):
    """Multi-scale EUSR. ``forward(x, scale)`` maps [0, 255] RGB (N,3,H,W) to (N,3,sH,sW)."""

    def __init__(self, config: EUSRConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = EUSRConfig(**overrides)
        elif overrides:
            config = EUSRConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        f = config.features
        self.register_buffer("rgb_mean", torch.empty(1, 3, 1, 1), persistent=False)
        self.reset_buffers()
        self.first = nn.Conv2d(3, f, 3, padding=1)
        self.scale_features = nn.ModuleDict(
            {
                str(s): nn.Sequential(*(LocalResidualBlock(f, config.scale_kernel) for _ in range(config.scale_blocks)))
                for s in config.scales
            }
        )
        self.shared = ResidualModule(f, config.shared_blocks)
        self.upscalers = nn.ModuleDict(
            {
                str(s): nn.Sequential(*(EnhancedUpscalingModule(f) for _ in range(int(math.log2(s)))))
                for s in config.scales
            }
        )
        self.outputs = nn.ModuleDict({str(s): nn.Conv2d(f, 3, 3, padding=1) for s in config.scales})
        for conv in [self.first, *self.outputs.values(), *self._rm_convs()]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def reset_buffers(self) -> None:
        """(Re)fill the non-persistent mean buffer, e.g. after building on the meta device."""
        device = self.rgb_mean.device if self.rgb_mean.device.type != "meta" else torch.device("cpu")
        self.rgb_mean = torch.tensor(self.config.rgb_mean, device=device).view(1, 3, 1, 1)

    def _rm_convs(self) -> Iterable[nn.Conv2d]:
        for module in self.modules():
            if isinstance(module, ResidualModule):
                yield module.conv

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    def _check_scale(self, scale: int) -> str:
        if scale not in self.config.scales:
            raise ValueError(f"scale {scale!r} is not a path of this model; it has {list(self.config.scales)}")
        return str(scale)

    def forward(self, x: torch.Tensor, scale: int = 4) -> torch.Tensor:
        key = self._check_scale(scale)
        mean = self.rgb_mean.to(x.dtype)
        h = self.first(x - mean)
        h = self.scale_features[key](h)
        h = self.shared(h)
        h = self.upscalers[key](h)
        return self.outputs[key](h) + mean

    def path(self, scale: int = 4) -> EUSRPath:
        """A single-scale view (shares weights): what ONNX export and inference use."""
        return EUSRPath(self, scale)

    @torch.no_grad()
    def copy_path(self, source: int, target: int) -> None:
        """Initialise ``target``'s own modules from ``source``'s (a warm start for a scale).

        Feature blocks and output conv are copied as they are; EUM i of the target takes EUM
        min(i, n_source - 1) of the source, so ×8 gets ×4's two EUMs plus a second copy of
        its last one, and ×2 gets ×4's first. Shared modules are shared already.
        """
        src, dst = self._check_scale(source), self._check_scale(target)
        if src == dst:
            return
        self.scale_features[dst].load_state_dict(self.scale_features[src].state_dict())
        self.outputs[dst].load_state_dict(self.outputs[src].state_dict())
        src_eums, dst_eums = self.upscalers[src], self.upscalers[dst]
        for i, eum in enumerate(dst_eums):
            eum.load_state_dict(src_eums[min(i, len(src_eums) - 1)].state_dict())

    def path_parameters(self, scale: int) -> list[nn.Parameter]:
        key = self._check_scale(scale)
        mods = [self.first, self.scale_features[key], self.shared, self.upscalers[key], self.outputs[key]]
        return [p for m in mods for p in m.parameters()]

    def extra_repr(self) -> str:
        return f"config={self.config}"


class EUSRPath(nn.Module):
    """One scale of an EUSR as a plain ``forward(x)`` module."""

    def __init__(self, model: EUSR, scale: int) -> None:
        super().__init__()
        model._check_scale(scale)
        self.model = model
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.scale)


def build_eusr(name: str = "paper", **overrides: Any) -> EUSR:
    """Factory: a named configuration, optionally with fields overridden."""
    config = config_by_name(name)
    if overrides:
        config = EUSRConfig.from_dict({**config.to_dict(), **overrides})
    return EUSR(config)
