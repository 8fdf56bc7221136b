"""train.checkpoint: safetensors checkpoints, no pickle, clear errors, atomic writes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from train.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    load_model,
    load_state_into,
    restore_grad_scaler,
    restore_optimizer,
    save_checkpoint,
)
from train.models.eusr import CONFIGS, EUSR, build_eusr

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_checkpoint_error_is_a_project_error_and_still_a_runtime_error():
    from runtime.errors import UpscaleError

    assert issubclass(CheckpointError, UpscaleError) and issubclass(CheckpointError, RuntimeError)
    with pytest.raises(UpscaleError, match="no such checkpoint file"):
        load_checkpoint(Path("nowhere.safetensors"))


def _trained_tiny():
    torch.manual_seed(3)
    model = build_eusr("tiny")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for scale in (2, 4):  # give Adam some state (×8 params keep none: partial state)
        loss = model(torch.rand(1, 3, 6, 6) * 255, scale).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


@pytest.fixture
def tiny_ckpt(tmp_path):
    model, opt = _trained_tiny()
    np_rng = np.random.default_rng(7)
    np_rng.integers(10, size=5)
    path = save_checkpoint(
        tmp_path / "tiny.safetensors",
        model,
        config=model.config.to_dict(),
        config_name="tiny",
        optimizer=opt,
        numpy_rng=np_rng,
        train_state={"step": 2, "phase": "pretrain"},
    )
    return path, model, opt, np_rng


def _rewrite(
    src: Path,
    dst: Path,
    *,
    header_update: dict | None = None,
    drop: tuple[str, ...] = (),
    tensors_update: dict | None = None,
) -> Path:
    """Copy a checkpoint with an edited header/tensors (written with safetensors, not our code)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header.update(header_update or {})
    for k in drop:
        header.pop(k, None)
    tensors.update(tensors_update or {})
    save_file(tensors, str(dst), metadata=header)
    return dst


# --- roundtrip -------------------------------------------------------------------------------


def test_roundtrip_weights_config_and_state(tiny_ckpt):
    path, model, opt, np_rng = tiny_ckpt
    ck = load_checkpoint(path)
    assert ck.kind == "eusr" and ck.config_name == "tiny"
    assert ck.config == json.loads(json.dumps(model.config.to_dict()))
    assert ck.train_state == {"step": 2, "phase": "pretrain"}
    own = model.state_dict()
    assert set(ck.model_state) == set(own)
    for k, v in own.items():
        assert torch.equal(ck.model_state[k], v), k
    assert ck.rng_numpy == np_rng.bit_generator.state
    assert ck.rng_torch is not None and ck.rng_torch.dtype == torch.uint8

    loaded = load_model(path)
    assert isinstance(loaded, EUSR) and not loaded.training
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 5, 7) * 255
    with torch.no_grad():
        assert torch.equal(model.eval()(x, 4), loaded(x, 4))


def test_optimizer_state_roundtrip(tiny_ckpt):
    path, model, opt, _ = tiny_ckpt
    fresh = build_eusr("tiny")
    load_state_into(fresh, load_checkpoint(path).model_state, path)
    opt2 = torch.optim.Adam(fresh.parameters(), lr=5.0)
    restore_optimizer(opt2, load_checkpoint(path))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["state"].keys() == b["state"].keys() and len(a["state"]) > 0
    for pid in a["state"]:
        for key, value in a["state"][pid].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][pid][key])), (pid, key)
    assert b["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert tuple(b["param_groups"][0]["betas"]) == (0.9, 0.999)


def test_loaded_numpy_rng_continues_the_stream(tiny_ckpt):
    path, _, _, np_rng = tiny_ckpt
    g = np.random.default_rng()
    g.bit_generator.state = load_checkpoint(path).rng_numpy
    assert np.array_equal(g.integers(1000, size=8), np_rng.integers(1000, size=8))


def test_amp_loss_scale_survives_a_resume(tmp_path):
    """An --amp run must resume at the loss scale it had reached, not at 65536 again.

    The scaler is CPU-enabled here (a CUDA one behaves the same); an inf gradient backs the
    scale off, then a finite step counts toward the next growth.
    """
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    for bad in (True, False):
        opt.zero_grad()
        scaler.scale(model(torch.ones(1, 2)).sum()).backward()
        if bad:
            model.weight.grad.fill_(float("inf"))
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 512.0 and scaler.state_dict()["_growth_tracker"] == 1
    path = save_checkpoint(tmp_path / "amp.safetensors", model, config={}, optimizer=opt, grad_scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    assert restore_grad_scaler(fresh, load_checkpoint(path))
    assert fresh.state_dict() == scaler.state_dict()
    # Without AMP nothing is written, and nothing is restored into a disabled scaler.
    off = save_checkpoint(
        tmp_path / "fp32.safetensors",
        model,
        config={},
        optimizer=opt,
        grad_scaler=torch.amp.GradScaler("cpu", enabled=False),
    )
    assert load_checkpoint(off).grad_scaler is None
    assert not restore_grad_scaler(torch.amp.GradScaler("cpu", enabled=False), load_checkpoint(path))
    assert not restore_grad_scaler(torch.amp.GradScaler("cpu"), load_checkpoint(off))


def test_model_only_checkpoint_cannot_resume(tmp_path):
    model = build_eusr("tiny")
    path = save_checkpoint(tmp_path / "m.safetensors", model, config=model.config.to_dict())
    ck = load_checkpoint(path)
    assert ck.optim_groups == [] and ck.rng_torch is None and ck.rng_numpy is None
    with pytest.raises(CheckpointError, match=r"m\.safetensors.*no optimizer state"):
        restore_optimizer(torch.optim.Adam(model.parameters()), ck)


def test_save_creates_parent_folders(tmp_path):
    model = build_eusr("tiny")
    path = save_checkpoint(tmp_path / "a" / "b" / "m.safetensors", model, config=model.config.to_dict())
    assert path.is_file()


# --- damaged / wrong files -------------------------------------------------------------------


def _assert_error(path, *needles, loader=load_checkpoint):
    with pytest.raises(CheckpointError) as exc:
        loader(path)
    msg = str(exc.value)
    assert str(path) in msg, f"message does not name the file: {msg}"
    for needle in needles:
        assert needle.lower() in msg.lower(), f"{needle!r} not in {msg!r}"
    return msg


def test_text_file(tmp_path):
    p = tmp_path / "notes.safetensors"
    p.write_text("this is not a checkpoint\n" * 20)
    _assert_error(p, "not a readable safetensors checkpoint")
    _assert_error(p, "not a readable safetensors checkpoint", loader=load_model)


def test_truncated_file(tiny_ckpt, tmp_path):
    path = tiny_ckpt[0]
    data = path.read_bytes()
    half = tmp_path / "half.safetensors"
    half.write_bytes(data[: len(data) // 2])
    _assert_error(half, "truncated")
    few = tmp_path / "few.safetensors"
    few.write_bytes(data[:5])
    _assert_error(few, "not a readable safetensors checkpoint")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    _assert_error(p, "empty", "0 bytes")


def test_missing_path(tmp_path):
    _assert_error(tmp_path / "nope.safetensors", "no such checkpoint file")
    _assert_error(tmp_path / "nope.safetensors", "no such checkpoint file", loader=load_model)


def test_directory_is_not_a_checkpoint(tmp_path):
    _assert_error(tmp_path, "no such checkpoint file")


def test_foreign_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(p))
    _assert_error(p, "format", FORMAT)


def test_config_does_not_match_weights(tiny_ckpt, tmp_path):
    path = tiny_ckpt[0]
    bad = _rewrite(
        path, tmp_path / "mismatch.safetensors", header_update={"config": json.dumps(CONFIGS["compact"].to_dict())}
    )
    msg = _assert_error(bad, "weights do not fit the model", loader=load_model)
    assert "missing" in msg and "other shapes" in msg  # compact: 8 shared blocks, 32 features


def test_weights_of_a_tiny_model_under_compact_header(tmp_path):
    tiny = build_eusr("tiny")
    p = save_checkpoint(tmp_path / "liar.safetensors", tiny, config=CONFIGS["compact"].to_dict(), config_name="compact")
    _assert_error(p, "weights do not fit", loader=load_model)


def test_invalid_config_in_header(tiny_ckpt, tmp_path):
    path = tiny_ckpt[0]
    bad = _rewrite(
        path,
        tmp_path / "badcfg.safetensors",
        header_update={"config": json.dumps({**CONFIGS["tiny"].to_dict(), "scale_kernel": 4})},
    )
    _assert_error(bad, "invalid model config", "scale_kernel", loader=load_model)
    bad2 = _rewrite(
        path,
        tmp_path / "unknown.safetensors",
        header_update={"config": json.dumps({**CONFIGS["tiny"].to_dict(), "depth": 3})},
    )
    _assert_error(bad2, "invalid model config", "depth", loader=load_model)


def test_damaged_header_json(tiny_ckpt, tmp_path):
    path = tiny_ckpt[0]
    bad = _rewrite(path, tmp_path / "badjson.safetensors", header_update={"config": "{not json"})
    _assert_error(bad, "damaged header")
    nocfg = _rewrite(path, tmp_path / "nocfg.safetensors", drop=("config",))
    _assert_error(nocfg, "damaged header", "config")


def test_other_kind(tmp_path):
    model = build_eusr("tiny")
    p = save_checkpoint(tmp_path / "disc.safetensors", model, config=model.config.to_dict(), kind="discriminator")
    _assert_error(p, "'discriminator'", "'eusr'")
    _assert_error(p, "'discriminator'", loader=load_model)
    assert load_checkpoint(p, expect_kind="discriminator").kind == "discriminator"
    assert load_checkpoint(p, expect_kind=None).kind == "discriminator"


def test_optimizer_state_that_does_not_fit(tiny_ckpt):
    path = tiny_ckpt[0]
    other = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        restore_optimizer(other, load_checkpoint(path))


# --- no pickle -------------------------------------------------------------------------------


def test_loading_never_unpickles(tiny_ckpt, monkeypatch):
    path = tiny_ckpt[0]

    def forbidden(*args, **kwargs):
        raise AssertionError("checkpoint loading used pickle")

    class ForbiddenUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden()

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", ForbiddenUnpickler)
    monkeypatch.setattr(torch, "load", forbidden)
    ck = load_checkpoint(path)
    model = load_model(path)
    restore_optimizer(torch.optim.Adam(model.parameters()), ck)


def test_file_is_plain_safetensors(tiny_ckpt):
    """8-byte little-endian header length, then a JSON header: no pickle opcodes anywhere."""
    data = tiny_ckpt[0].read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    assert header["__metadata__"]["format"] == FORMAT
    assert not data.startswith(b"\x80")  # pickle protocol marker
    assert b"PK\x03\x04" not in data[:16]  # not a torch.save zip archive


# --- atomic save -----------------------------------------------------------------------------


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    def explode(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")  # a half-written file...
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", explode)
    model = build_eusr("tiny")
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck.safetensors", model, config=model.config.to_dict())
    assert _files(tmp_path) == []


def test_failed_save_keeps_previous_checkpoint(tiny_ckpt, monkeypatch):
    import safetensors.torch

    path = tiny_ckpt[0]
    before = path.read_bytes()

    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    model = build_eusr("tiny")
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, config=model.config.to_dict())
    assert path.read_bytes() == before
    assert _files(path.parent) == [path.name]
    load_checkpoint(path)


def test_failed_replace_leaves_no_temp_file(tmp_path, monkeypatch):
    import os

    def no_replace(src, dst):
        raise PermissionError("replace refused")

    monkeypatch.setattr(os, "replace", no_replace)
    model = build_eusr("tiny")
    with pytest.raises(PermissionError):
        save_checkpoint(tmp_path / "ck.safetensors", model, config=model.config.to_dict())
    assert _files(tmp_path) == []


def test_successful_save_leaves_only_the_checkpoint(tmp_path):
    model = build_eusr("tiny")
    for _ in range(2):  # overwriting works too
        save_checkpoint(tmp_path / "ck.safetensors", model, config=model.config.to_dict())
    assert _files(tmp_path) == ["ck.safetensors"]


def test_slim_keeps_the_averaged_weights_only(tmp_path):
    import torch

    from train.checkpoint import load_checkpoint, load_model, save_checkpoint
    from train.models.eusr import build_eusr
    from train.slim import main as slim_main

    torch.manual_seed(0)
    model = build_eusr("tiny")
    opt = torch.optim.Adam(model.parameters())
    model(torch.rand(1, 3, 8, 8) * 255).mean().backward()
    opt.step()
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    full = save_checkpoint(
        tmp_path / "full.safetensors",
        model,
        config=model.config.to_dict(),
        config_name="tiny",
        optimizer=opt,
        ema_state=ema,
        train_state={"step": 7},
    )
    assert slim_main([str(full), str(tmp_path / "slim.safetensors")]) == 0
    slim = load_checkpoint(tmp_path / "slim.safetensors")
    assert not slim.optim_state and not slim.ema_state and slim.rng_torch is None
    assert slim.train_state["step"] == 7 and slim.train_state["slimmed_from"]["weights"] == "ema"
    got = load_model(tmp_path / "slim.safetensors").state_dict()
    for k, v in ema.items():
        assert torch.equal(got[k], v), k
    assert (tmp_path / "slim.safetensors").stat().st_size < full.stat().st_size / 2


def test_checkpoint_is_readable_by_others(tmp_path):
    import stat

    from train.checkpoint import save_checkpoint
    from train.models.eusr import build_eusr

    model = build_eusr("tiny")
    path = save_checkpoint(tmp_path / "c.safetensors", model, config=model.config.to_dict(), config_name="tiny")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
