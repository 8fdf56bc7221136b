"""The multi-scale EUSR generator against the facts in EUSR_SPEC.md."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from train.models.eusr import (
    CONFIGS,
    DIV2K_RGB_MEAN,
    EUSR,
    EnhancedUpscalingModule,
    EUSRConfig,
    LocalResidualBlock,
    ResidualModule,
    build_eusr,
    config_by_name,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def n_params(module_or_params) -> int:
    params = module_or_params.parameters() if isinstance(module_or_params, nn.Module) else module_or_params
    return sum(p.numel() for p in params)


@pytest.fixture(scope="module")
def paper_model() -> EUSR:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        return build_eusr("paper")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def tiny_model() -> EUSR:
    torch.manual_seed(0)
    return build_eusr("tiny").eval()


# --- parameter counts (spec: "Parameter count, default config") -----------------------------


def test_paper_total_parameter_count(paper_model):
    assert n_params(paper_model) == 6_295_689


@pytest.mark.parametrize("scale, expected", [(2, 3_256_835), (4, 3_699_971), (8, 4_143_107)])
def test_paper_path_parameter_counts(paper_model, scale, expected):
    params = paper_model.path_parameters(scale)
    assert len({id(p) for p in params}) == len(params), "a parameter is listed twice"
    assert n_params(params) == expected


def test_paper_per_module_counts(paper_model):
    assert n_params(LocalResidualBlock(64, 3)) == 73_856
    assert n_params(LocalResidualBlock(64, 5)) == 204_928
    assert n_params(ResidualModule(64, 1)) == 110_784
    assert n_params(EnhancedUpscalingModule(64)) == 443_136
    assert n_params(nn.Conv2d(64, 64, 3)) == 36_928
    assert n_params(paper_model.first) == 1_792
    for s in (2, 4, 8):
        assert n_params(paper_model.outputs[str(s)]) == 1_731
        assert n_params(paper_model.scale_features[str(s)]) == 2 * 204_928
        assert n_params(paper_model.upscalers[str(s)]) == int(math.log2(s)) * 443_136
    assert n_params(paper_model.shared) == 32 * 73_856 + 36_928


def test_paper_total_matches_spec_formula(paper_model):
    assert 1_792 + 3 * 2 * 204_928 + (32 * 73_856 + 36_928) + 6 * 443_136 + 3 * 1_731 == n_params(paper_model)


def test_path_parameters_are_exactly_what_the_path_uses():
    torch.manual_seed(0)
    model = build_eusr("tiny")
    x = torch.rand(1, 3, 6, 5) * 255
    model(x, 4).sum().backward()
    on_path = {id(p) for p in model.path_parameters(4)}
    for name, p in model.named_parameters():
        if id(p) in on_path:
            assert p.grad is not None, f"{name} is listed for ×4 but gets no gradient"
        else:
            assert p.grad is None, f"{name} gets a gradient from ×4 but is not in path_parameters(4)"


# --- forward shapes --------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("hw", [(7, 5), (1, 3), (9, 11)])
def test_output_shape_each_scale_odd_sizes(tiny_model, scale, hw):
    h, w = hw
    x = torch.rand(2, 3, h, w) * 255
    with torch.no_grad():
        y = tiny_model(x, scale)
        y_path = tiny_model.path(scale)(x)
    assert y.shape == (2, 3, h * scale, w * scale)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert torch.equal(y, y_path), "EUSRPath must give the same output as EUSR(x, scale)"


# --- EUM sub-pixel order (spec: TF depth_to_space) ------------------------------------------


def test_eum_subpixel_order_is_tf_depth_to_space():
    torch.manual_seed(1)
    eum = EnhancedUpscalingModule(4)
    with torch.no_grad():  # make the four taps clearly different
        for p in eum.parameters():
            p.normal_(0, 0.3)
    taps: list[torch.Tensor] = []
    hooks = [stage.register_forward_hook(lambda m, i, o: taps.append(o.detach().clone())) for stage in eum.stages]
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        out = eum(x)
    for h in hooks:
        h.remove()
    assert len(taps) == 4
    # the taps are a cascade: stage k+1 takes stage k's output
    with torch.no_grad():
        y = x
        for k, stage in enumerate(eum.stages):
            y = stage(y)
            torch.testing.assert_close(y, taps[k], rtol=0, atol=0)
    assert out.shape == (2, 4, 6, 10)
    for i in range(2):
        for j in range(2):
            tap = taps[2 * i + j]  # y(2i+j+1) in the spec's 1-based numbering
            torch.testing.assert_close(out[:, :, i::2, j::2], tap, rtol=0, atol=0)
    # The test discriminates: plain cat + PixelShuffle (the order the spec warns about) differs.
    naive = nn.PixelShuffle(2)(torch.cat(taps, dim=1))
    assert not torch.allclose(naive, out)


# --- mean shift ------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_zero_output_conv_returns_rgb_mean_image(tiny_model, scale):
    with torch.no_grad():
        tiny_model.outputs[str(scale)].weight.zero_()
        tiny_model.outputs[str(scale)].bias.zero_()
        y = tiny_model(torch.rand(1, 3, 5, 4) * 255, scale)
    expected = torch.tensor(DIV2K_RGB_MEAN, dtype=torch.float32).view(1, 3, 1, 1).expand_as(y)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_mean_is_subtracted_before_first_conv(tiny_model):
    seen = {}

    def grab(module, inputs, output):
        seen["input"] = inputs[0].detach().clone()

    hook = tiny_model.first.register_forward_hook(grab)
    x = torch.rand(1, 3, 4, 6) * 255
    with torch.no_grad():
        tiny_model(x, 2)
    hook.remove()
    mean = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(seen["input"], x - mean)


def test_custom_rgb_mean_is_used():
    model = EUSR(CONFIGS["tiny"], rgb_mean=(1.0, 2.0, 3.0)).eval()
    with torch.no_grad():
        model.outputs["2"].weight.zero_()
        model.outputs["2"].bias.zero_()
        y = model(torch.zeros(1, 3, 2, 2), 2)
    assert y[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0]


# --- initialisation (spec: "Init in the authors' code") --------------------------------------

# TF's truncated_normal(stddev=σ) and torch's trunc_normal_(std=σ, a=-2σ, b=2σ) both take σ of
# the *untruncated* normal; the samples' own std is σ·sqrt(1 - 4φ(2)/(Φ(2)-Φ(-2))) ≈ 0.8796σ.
TRUNC2_STD_FACTOR = 0.879626


def _lrb_convs(model: nn.Module):
    for m in model.modules():
        if isinstance(m, LocalResidualBlock):
            yield m.conv1
            yield m.conv2


def test_lrb_convs_truncated_normal_init(paper_model):
    convs = list(_lrb_convs(paper_model))
    # 3 scales × 2 LRB5 + 32 shared LRB3 + 6 EUMs × 4 RM(1) × 1 LRB3, two convs each
    assert len(convs) == 2 * (3 * 2 + 32 + 6 * 4)
    for conv in convs:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        sigma = math.sqrt(1.3 * (1e-4 / 62) / fan_in)
        w = conv.weight.detach().double()
        assert w.abs().max().item() <= 2 * sigma * (1 + 1e-6), "not truncated at 2σ"
        assert w.std().item() == pytest.approx(TRUNC2_STD_FACTOR * sigma, rel=0.03)
        assert w.mean().abs().item() < 0.05 * sigma
        assert torch.count_nonzero(conv.bias) == 0


def test_other_convs_glorot_uniform_zero_bias(paper_model):
    lrb = {id(c) for c in _lrb_convs(paper_model)}
    others = [m for m in paper_model.modules() if isinstance(m, nn.Conv2d) and id(m) not in lrb]
    # first conv + 3 output convs + shared RM conv + 6 EUMs × 4 RM convs
    assert len(others) == 1 + 3 + 1 + 24
    for conv in others:
        k = conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(6.0 / (conv.in_channels * k + conv.out_channels * k))
        w = conv.weight.detach().double()
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.9 * bound  # not a narrower init (torch's default is 1/sqrt(fan_in))
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert torch.count_nonzero(conv.bias) == 0


def test_fresh_model_starts_near_identity_residuals():
    """LRB branches start ~0, so the shared module barely changes its input at init."""
    torch.manual_seed(0)
    block = LocalResidualBlock(64, 3)
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        assert (block(x) - x).abs().max().item() < 1e-2


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scales": (3,)}, "scales"),
        ({"scales": (1, 2)}, "scales"),
        ({"scales": (2, 2)}, "scales"),
        ({"scales": ()}, "scales"),
        ({"scales": (2, 6)}, "scales"),
        ({"scale_kernel": 4}, "scale_kernel must be odd"),
        ({"features": 0}, "features"),
        ({"shared_blocks": -1}, "shared_blocks"),
        ({"scale_blocks": 1.5}, "scale_blocks"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EUSRConfig(**kwargs)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_dict_roundtrip(name):
    import json

    cfg = CONFIGS[name]
    data = json.loads(json.dumps(cfg.to_dict()))  # as a checkpoint header stores it: lists, not tuples
    assert isinstance(data["scales"], list)
    back = EUSRConfig.from_dict(data)
    assert back == cfg
    assert isinstance(back.scales, tuple) and isinstance(back.rgb_mean, tuple)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown EUSRConfig fields.*'bogus'"):
        EUSRConfig.from_dict({**CONFIGS["tiny"].to_dict(), "bogus": 1})


def test_unknown_config_name():
    with pytest.raises(ValueError, match="unknown EUSR configuration 'huge'") as exc:
        config_by_name("huge")
    for name in CONFIGS:
        assert name in str(exc.value)
    with pytest.raises(ValueError):
        build_eusr("huge")


def test_build_with_overrides():
    model = build_eusr("tiny", scales=(4,))
    assert model.scales == (4,)
    assert set(model.outputs.keys()) == {"4"}
    assert model.config.features == CONFIGS["tiny"].features


@pytest.mark.parametrize("bad", [3, 16, 1])
def test_forward_wrong_scale_names_it(tiny_model, bad):
    with pytest.raises(ValueError, match=rf"scale {bad}\b.*\[2, 4, 8\]"):
        tiny_model(torch.zeros(1, 3, 4, 4), bad)
    with pytest.raises(ValueError, match=rf"scale {bad}\b"):
        tiny_model.path(bad)
    with pytest.raises(ValueError, match=rf"scale {bad}\b"):
        tiny_model.path_parameters(bad)


def test_single_scale_model_rejects_other_scales():
    model = build_eusr("tiny", scales=(2,))
    with pytest.raises(ValueError, match=r"scale 4 .*\[2\]"):
        model(torch.zeros(1, 3, 4, 4), 4)
