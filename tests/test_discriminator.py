"""train.models.discriminator: the 4PP-EUSR discriminator, both dense-layer readings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from train.models.discriminator import CONV_CHANNELS, Discriminator

pytestmark = pytest.mark.usefixtures("single_thread_torch")

CONV_PARAMS = 4_712_224  # the ten 3×3 convs with bias
DENSE_PER_POSITION = 512 * 1024 + 1024 + 1024 + 1  # 526,337
DENSE_FLATTEN_192 = 6 * 6 * 512 * 1024 + 1024 + 1024 + 1  # 18,876,417


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_layers_follow_the_spec():
    d = Discriminator()
    convs = [m for m in d.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in convs] == list(CONV_CHANNELS)
    assert [c.in_channels for c in convs] == [3, 32, 32, 64, 64, 128, 128, 256, 256, 512]
    assert all(c.kernel_size == (3, 3) and c.bias is not None for c in convs)
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 11 and all(a.negative_slope == pytest.approx(0.2) for a in acts)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Sigmoid)) for m in d.modules())


def test_parameter_counts():
    per_pos, flat = Discriminator("per_position"), Discriminator("flatten", input_size=192)
    assert _count(per_pos.features) == _count(flat.features) == CONV_PARAMS
    assert _count(per_pos) == CONV_PARAMS + DENSE_PER_POSITION == 5_238_561
    assert _count(flat) == CONV_PARAMS + DENSE_FLATTEN_192 == 23_588_641
    assert Discriminator().dense == "per_position"  # the default: the authors' code


def test_per_position_shapes_at_any_size():
    torch.manual_seed(0)
    d = Discriminator("per_position")
    assert d(torch.rand(2, 3, 192, 192) * 255).shape == (2, 1, 6, 6)  # 36 logits per 192 image
    assert d(torch.rand(1, 3, 32, 64) * 255).shape == (1, 1, 1, 2)


def test_per_position_is_one_dense_stack_applied_at_every_position():
    torch.manual_seed(1)
    d = Discriminator("per_position")
    x = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        logits = d(x)
        feat = d.features(x)  # (1, 512, 2, 3)
        w1, b1 = d.head[0].weight.flatten(1), d.head[0].bias
        w2, b2 = d.head[2].weight.flatten(1), d.head[2].bias
        for i in range(2):
            for j in range(3):
                h = torch.nn.functional.leaky_relu(feat[0, :, i, j] @ w1.T + b1, 0.2)
                assert torch.allclose(logits[0, 0, i, j], (h @ w2.T + b2)[0], atol=1e-4)


def test_flatten_shape_and_size_error():
    torch.manual_seed(0)
    d = Discriminator("flatten", input_size=64)
    assert d(torch.rand(3, 3, 64, 64) * 255).shape == (3, 1)
    with pytest.raises(ValueError, match=r"built for 64×64 inputs, got 96×96"):
        d(torch.rand(1, 3, 96, 96))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"dense='conv'.*per_position"):
        Discriminator("conv")
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        Discriminator("flatten", input_size=0)
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\)"):
        Discriminator()(torch.rand(1, 1, 32, 32))


def test_config_round_trip():
    d = Discriminator("flatten", input_size=32)
    again = Discriminator.from_config(d.config())
    assert again.config() == d.config() and _count(again) == _count(d)
