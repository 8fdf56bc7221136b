"""Phase 3 (train.perceptual, train.losses): loss terms, routes, downscale, CLI end to end.

Tiny EUSR, LR patches 8×8 (HR 32×32), random score predictors whose batch-norm statistics
are calibrated on random images (an untrained MobileNetV2 in eval mode maps every image to
nearly the same feature, which would make the predictor terms constant).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train import perceptual
from train.checkpoint import load_checkpoint, load_model, save_checkpoint
from train.data import PatchDataset, load_rgb
from train.losses import (
    LossWeights,
    adversarial_loss,
    discriminator_loss,
    reconstruction_loss,
    representation_loss,
    score_loss,
)
from train.models.discriminator import Discriminator
from train.models.eusr import build_eusr
from train.models.nima import ScorePredictor, ScorePredictorConfig, save_score_predictor
from train.perceptual import ROUTES, PerceptualTrainer, bicubic_half, discriminator_path, downscale_half, sr_routes

pytestmark = pytest.mark.usefixtures("single_thread_torch")

TRAIN_SOURCES = [("astronaut.png", (60, 150)), ("coffee.png", (100, 200)), ("brick.png", (0, 0))]
TERMS = ("l_r", "l_g", "l_as", "l_ar", "l_ss", "l_sr")


def _calibrated_predictor(seed: int, dataset: str) -> ScorePredictor:
    torch.manual_seed(seed)
    model = ScorePredictor(ScorePredictorConfig(dataset=dataset))
    torch.nn.init.normal_(model.head[1].weight, 0, 0.05)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, 3, 32, 32) * 255)
    return model.eval()


@pytest.fixture(scope="module")
def assets(tmp_path_factory, photos_dir):
    """Train crops (3 × 100²), a val crop (112²), a tiny phase-1 generator, two predictors."""
    root = tmp_path_factory.mktemp("perceptual_assets")
    train, val = root / "train", root / "val"
    train.mkdir()
    val.mkdir()
    for name, (y, x) in TRAIN_SOURCES:
        img = load_rgb(photos_dir / "train" / name)[y : y + 100, x : x + 100]
        Image.fromarray(img).save(train / (Path(name).stem + ".png"))
    # 112² HR: the smallest whole number of ×4 LR pixels that leaves one 96² NIQE block inside the 4-pixel border
    Image.fromarray(load_rgb(photos_dir / "test" / "ihc.png")[100:212, 100:212]).save(val / "ihc112.png")
    torch.manual_seed(0)
    gen = build_eusr("tiny")
    gen_path = save_checkpoint(
        root / "gen.safetensors",
        gen,
        config=gen.config.to_dict(),
        config_name="tiny",
        train_state={"step": 10, "phase": "pretrain"},
    )
    paths = {"generator": gen_path}
    for i, name in enumerate(("ava", "tid2013")):
        paths[name] = save_score_predictor(root / f"{name}.safetensors", _calibrated_predictor(i + 1, name))
    return {"train": train, "val": val, **paths}


def _args(assets, out: Path, steps: int, *extra: str, generator: bool = True) -> list[str]:
    args = [
        "--train-dir",
        str(assets["train"]),
        "--val-dir",
        str(assets["val"]),
        "--patch",
        "8",
        "--steps",
        str(steps),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
        "--log-every",
        "1",
        "--val-every",
        "2",
        "--save-every",
        "2",
        "--seed",
        "3",
        "--aesthetic-predictor",
        str(assets["ava"]),
        "--subjective-predictor",
        str(assets["tid2013"]),
        *extra,
    ]
    if generator:
        args += ["--generator", str(assets["generator"])]
    return args


def _run(argv: list[str]) -> int:
    threads = torch.get_num_threads()
    try:
        return perceptual.main(argv)
    finally:
        torch.set_num_threads(threads)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- loss terms vs hand-computed values ------------------------------------------------------


def test_reconstruction_loss_is_mean_absolute_error():
    sr = torch.tensor([[0.0, 10.0], [20.0, 30.0]])
    hr = torch.tensor([[1.0, 8.0], [20.0, 35.0]])
    assert reconstruction_loss(sr, hr).item() == pytest.approx((1 + 2 + 0 + 5) / 4)


def test_adversarial_loss_is_minus_log_d():
    logits = torch.tensor([[0.0], [math.log(3.0)]])  # D = 0.5 and 0.75
    assert adversarial_loss(logits).item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, rel=1e-6)


def test_score_loss_is_a_hinge_on_the_distance_from_10():
    s_sr, s_hr = torch.tensor([5.0, 9.0]), torch.tensor([6.0, 8.0])
    # (10-5) - 0.8*(10-6) = 1.8 ; (10-9) - 0.8*(10-8) = -0.6 -> 0
    assert score_loss(s_sr, s_hr).item() == pytest.approx(0.9)


def test_representation_loss_is_mean_over_elements():
    f_sr = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    f_hr = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert representation_loss(f_sr, f_hr).item() == pytest.approx((0 + 4 + 9 + 0 + 1 + 0) / 6)


def test_discriminator_loss_real_plus_mean_fake():
    hr = torch.tensor([[math.log(3.0)]])  # D(HR) = 0.75
    srs = [torch.tensor([[0.0]]), torch.tensor([[math.log(1 / 3)]])]  # D(SR) = 0.5, 0.25
    want = math.log(4 / 3) + (math.log(2) + math.log(4 / 3)) / 2
    assert discriminator_loss(hr, srs).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="at least one SR route"):
        discriminator_loss(hr, [])


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"reconstruction_loss: SR \(2, 3\) and HR \(3, 2\)"):
        reconstruction_loss(torch.zeros(2, 3), torch.zeros(3, 2))


def test_loss_weights_defaults_and_alpha_p():
    w = LossWeights()
    assert w.effective() == pytest.approx(
        {"l_r": 0.05, "l_g": 0.1, "l_as": 0.01, "l_ar": 0.1, "l_ss": 0.01, "l_sr": 0.1}
    )
    assert w.active() == TERMS
    off = LossWeights(predictor=0.0, reconstruction=0.5)
    assert off.active() == ("l_r", "l_g") and off.effective()["l_r"] == 0.5
    with pytest.raises(ValueError, match="LossWeights.adversarial must be a finite number >= 0"):
        LossWeights(adversarial=-1.0)


# --- routes and downscale --------------------------------------------------------------------


def test_three_routes_give_4x_outputs():
    torch.manual_seed(0)
    g = build_eusr("tiny").eval()
    lr = torch.rand(2, 3, 8, 8) * 255
    with torch.no_grad():
        out = sr_routes(g, lr)
        assert list(out) == list(ROUTES)
        assert all(v.shape == (2, 3, 32, 32) for v in out.values())
        assert torch.equal(out["x4"], g(lr, 4))
        assert torch.equal(out["x2x2"], g(g(lr, 2), 2))  # raw float output into the second pass
        assert torch.equal(out["x8down"], g(lr, 8)[..., ::2, ::2])
        bic = sr_routes(g, lr, ("x8down",), downscale="bicubic")["x8down"]
        assert bic.shape == (2, 3, 32, 32) and not torch.equal(bic, out["x8down"])


def test_decimate_keeps_even_pixels():
    x = torch.arange(48.0).reshape(1, 1, 6, 8)
    assert torch.equal(downscale_half(x, "decimate"), x[..., 0::2, 0::2])
    with pytest.raises(ValueError, match="downscale method 'area'"):
        downscale_half(x, "area")


@pytest.mark.parametrize("shape", [(40, 36), (37, 30)])
def test_bicubic_half_matches_matlab_imresize(shape):
    from runtime.imresize import imresize

    img = np.random.default_rng(0).uniform(0, 255, (*shape, 3))
    want = imresize(img, 0.5)
    x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None].requires_grad_(True)
    got = bicubic_half(x)
    assert got.shape[-2:] == want.shape[:2]
    np.testing.assert_allclose(got[0].detach().numpy().transpose(1, 2, 0), want, atol=1e-3, rtol=0)
    assert float((got[0].detach().double().numpy().transpose(1, 2, 0) - want).__abs__().mean()) < 1e-4
    got.sum().backward()  # differentiable: a constant gradient spreads to every input pixel
    assert torch.isfinite(x.grad).all() and (x.grad != 0).all()


# --- the step function on a fixed batch ------------------------------------------------------


def _fixed_batch(assets):
    data = PatchDataset(assets["train"], [4], lr_patch=8, augment=False)
    lr, hr = data.sample(np.random.default_rng(0), 4, 2)
    return torch.from_numpy(lr), torch.from_numpy(hr)


def _trainer(assets, lr_g: float, lr_d: float, weights: LossWeights | None = None):
    from train.models.nima import load_score_predictor

    torch.manual_seed(0)
    g = build_eusr("tiny")
    d = Discriminator()
    opt_g = torch.optim.Adam(g.parameters(), lr=lr_g, betas=(0.9, 0.999), eps=1e-8)
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=(0.9, 0.999), eps=1e-8)
    a, s = load_score_predictor(assets["ava"]), load_score_predictor(assets["tid2013"])
    return PerceptualTrainer(g, d, a, s, weights or LossWeights(), opt_g=opt_g, opt_d=opt_d)


@pytest.mark.slow
def test_generator_loss_decreases_on_a_fixed_batch(assets):
    lr, hr = _fixed_batch(assets)
    trainer = _trainer(assets, lr_g=1e-3, lr_d=2e-5)
    logs = [trainer.step(lr, hr) for _ in range(12)]
    for rec in logs:
        assert all(math.isfinite(v) for v in rec.values()), rec
    total = [r["loss_g"] for r in logs]
    assert np.mean(total[-3:]) < 0.7 * np.mean(total[:3]), total
    # every term of eq. 8 was computed, per route, and the total is their weighted sum
    w = LossWeights().effective()
    for rec in logs[:2]:
        assert rec["loss_g"] == pytest.approx(sum(w[t] * rec[t] for t in TERMS), rel=1e-5)
        for t in TERMS:
            assert rec[t] == pytest.approx(np.mean([rec[f"{t}/{r}"] for r in ROUTES]), rel=1e-5)


@pytest.mark.slow
def test_discriminator_loss_decreases_against_a_fixed_generator(assets):
    lr, hr = _fixed_batch(assets)
    trainer = _trainer(assets, lr_g=0.0, lr_d=1e-4, weights=LossWeights(predictor=0.0))
    before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    logs = [trainer.step(lr, hr) for _ in range(12)]
    d = [r["loss_d"] for r in logs]
    assert d[-1] < 0.5 * d[0], d
    assert logs[-1]["d_hr"] > logs[-1]["d_sr"]
    # the discriminator loss never reaches the generator (lr 0 aside, no gradient is made)
    assert all(torch.equal(before[k], v) for k, v in trainer.generator.state_dict().items())


def test_generator_gradient_does_not_touch_the_discriminator(assets):
    lr, hr = _fixed_batch(assets)
    trainer = _trainer(assets, lr_g=1e-4, lr_d=1e-4, weights=LossWeights(predictor=0.0))
    g_loss, _, _ = trainer.forward(lr, hr)
    g_loss.backward(inputs=[p for p in trainer.generator.parameters()])
    assert all(p.grad is None for p in trainer.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.generator.parameters())


# --- CLI end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight_run(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("p3_straight")
    assert _run(_args(assets, out, 4)) == 0
    return out


def test_run_logs_every_term_and_writes_both_checkpoints(straight_run, assets):
    out = straight_run
    log = _read_jsonl(out / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    keys = [*TERMS, "loss_g", "loss_d", "d_hr", "d_sr", "s_a/hr", "s_a/sr", "s_s/hr", "s_s/sr"]
    keys += [f"{t}/{r}" for t in TERMS for r in ROUTES] + [f"d_sr/{r}" for r in ROUTES]
    for rec in log:
        for k in keys:
            assert k in rec and math.isfinite(rec[k]), k
        assert 0 <= rec["d_hr"] <= 1 and 0 <= rec["d_sr"] <= 1
        assert rec["lr_g"] == pytest.approx(1e-5) and rec["lr_d"] == pytest.approx(2e-5)
    val = _read_jsonl(out / "val_log.jsonl")
    assert [r["step"] for r in val] == [2, 4] and all(
        math.isfinite(r["psnr_y"]) and math.isfinite(r["niqe"]) for r in val
    )
    g = load_checkpoint(out / "last.safetensors")
    assert g.kind == "eusr" and g.config_name == "tiny"
    ts = g.train_state
    assert ts["step"] == 4 and ts["phase"] == "perceptual" and ts["routes"] == list(ROUTES)
    assert ts["downscale"] == "decimate" and ts["loss_weights"] == LossWeights().to_dict()
    assert set(ts["predictors"]) == {"aesthetic", "subjective"}
    d = load_checkpoint(discriminator_path(out / "last.safetensors"), expect_kind="discriminator")
    assert d.config == {"dense": "per_position", "input_size": 32, "negative_slope": 0.2}
    assert d.train_state["step"] == 4 and d.optim_groups


def test_result_loads_with_load_model_and_differs_from_the_start(straight_run, assets):
    trained, start = load_model(straight_run / "last.safetensors"), load_model(assets["generator"])
    x = torch.rand(1, 3, 8, 8) * 255
    with torch.no_grad():
        assert not torch.equal(trained(x, 4), start(x, 4))
    # the generator file carries the generator's weights and nothing else
    assert set(load_checkpoint(straight_run / "last.safetensors").model_state) == set(build_eusr("tiny").state_dict())


def test_validation_niqe_is_what_evaluate_reports(straight_run, assets, tmp_path):
    """The NIQE logged during training is the one train.evaluate reports for the saved
    generator (same LR, rounding, Y and border), so a run can be watched on it."""
    from train import evaluate

    logged = _read_jsonl(straight_run / "val_log.jsonl")[-1]
    assert (
        evaluate.main(
            [
                str(straight_run / "last.safetensors"),
                "--data",
                str(assets["val"]),
                "--out",
                str(tmp_path / "ev"),
                "--threads",
                "1",
                "--strips",
                "0",
            ]
        )
        == 0
    )
    rows = [r for d in json.loads((tmp_path / "ev" / "evaluate.json").read_text())["datasets"] for r in d["images"]]
    assert len(rows) == 1
    assert logged["niqe"] == pytest.approx(rows[0]["niqe_model"], abs=1e-9)
    assert logged["psnr_y"] == pytest.approx(rows[0]["psnr_y_model"], abs=1e-6)


@pytest.mark.slow
def test_resume_is_bit_exact(straight_run, assets, tmp_path):
    out = tmp_path / "split"
    assert _run(_args(assets, out, 2)) == 0
    assert _run(_args(assets, out, 4, "--resume", str(out / "last.safetensors"), generator=False)) == 0
    for path in (Path("last.safetensors"), Path("last.discriminator.safetensors")):
        kind = "discriminator" if "discriminator" in path.name else "eusr"
        a, b = load_checkpoint(straight_run / path, expect_kind=kind), load_checkpoint(out / path, expect_kind=kind)
        assert a.model_state.keys() == b.model_state.keys()
        for k in a.model_state:
            assert torch.equal(a.model_state[k], b.model_state[k]), f"{path}: weight {k} differs after resume"
        assert a.optim_state.keys() == b.optim_state.keys() and a.optim_state
        for k in a.optim_state:
            assert torch.equal(a.optim_state[k], b.optim_state[k]), f"{path}: Adam state {k} differs after resume"
        assert a.optim_groups == b.optim_groups
        assert a.train_state["step"] == b.train_state["step"] == 4
    ga, gb = load_checkpoint(straight_run / "last.safetensors"), load_checkpoint(out / "last.safetensors")
    assert ga.rng_numpy == gb.rng_numpy and torch.equal(ga.rng_torch, gb.rng_torch)
    la, lb = _read_jsonl(straight_run / "train_log.jsonl"), _read_jsonl(out / "train_log.jsonl")
    strip = lambda r: {k: v for k, v in r.items() if k != "elapsed_s"}  # noqa: E731
    assert [strip(r) for r in la] == [strip(r) for r in lb]


def test_no_multipass_trains_the_x4_route_alone(assets, tmp_path):
    out = tmp_path / "single"
    assert _run(_args(assets, out, 2, "--no-multipass", "--discriminator-dense", "flatten", "--ema", "0.9")) == 0
    for rec in _read_jsonl(out / "train_log.jsonl"):
        routed = {k.split("/")[1] for k in rec if "/" in k and k.split("/")[0] in (*TERMS, "d_sr")}
        assert routed == {"x4"}, rec
        for t in TERMS:
            assert rec[t] == rec[f"{t}/x4"]
    assert load_checkpoint(out / "last.safetensors").train_state["routes"] == ["x4"]
    d = load_checkpoint(out / "last.discriminator.safetensors", expect_kind="discriminator")
    assert d.config["dense"] == "flatten" and d.config["input_size"] == 32
    g = load_checkpoint(out / "last.safetensors")
    assert g.ema_state and set(g.ema_state) == set(g.model_state)  # --ema: load_model serves the average


def test_generator_weights_auto_takes_the_moving_average(tmp_path):
    torch.manual_seed(0)
    g = build_eusr("tiny")
    avg = {k: v + 1.0 for k, v in g.state_dict().items()}
    path = save_checkpoint(tmp_path / "g.safetensors", g, config=g.config.to_dict(), ema_state=avg)
    k = "outputs.4.weight"
    assert torch.equal(perceptual._load_generator(path, "auto")[0].state_dict()[k], avg[k])
    assert torch.equal(perceptual._load_generator(path, "raw")[0].state_dict()[k], g.state_dict()[k])


def test_ablation_flags_drop_their_terms(assets, tmp_path):
    out = tmp_path / "ablate"
    args = _args(assets, out, 2, "--no-adversarial", "--no-subjective", "--downscale", "bicubic", "--val-dir", "")
    assert _run(args) == 0
    log = _read_jsonl(out / "train_log.jsonl")
    for rec in log:
        assert {t for t in TERMS if t in rec} == {"l_r", "l_as", "l_ar"}
        assert not any(k.startswith(("loss_d", "d_", "s_s/")) for k in rec)
        assert rec["loss_g"] == pytest.approx(0.05 * rec["l_r"] + 0.01 * rec["l_as"] + 0.1 * rec["l_ar"], rel=1e-5)
    w = load_checkpoint(out / "last.safetensors").train_state["loss_weights"]
    assert w["adversarial"] == 0 and w["subjective_score"] == 0 and w["subjective_representation"] == 0
    assert w["aesthetic_score"] == 0.01 and w["reconstruction"] == 0.05
    assert not discriminator_path(out / "last.safetensors").exists()  # no discriminator without l_g


def test_alpha_p_zero_needs_no_predictor(assets, tmp_path):
    out = tmp_path / "nop"
    args = [a for a in _args(assets, out, 1, "--alpha-p", "0", "--alpha-r", "0.5", "--val-dir", "")]
    for flag in ("--aesthetic-predictor", "--subjective-predictor"):
        i = args.index(flag)
        del args[i : i + 2]
    assert _run(args) == 0
    rec = _read_jsonl(out / "train_log.jsonl")[0]
    assert {t for t in TERMS if t in rec} == {"l_r", "l_g"}
    assert rec["loss_g"] == pytest.approx(0.5 * rec["l_r"] + 0.1 * rec["l_g"], rel=1e-5)


# --- bad input -------------------------------------------------------------------------------


def test_generator_and_resume_are_exclusive(assets, tmp_path):
    with pytest.raises(SystemExit, match="--generator .* or --resume .*not both"):
        _run(_args(assets, tmp_path / "o", 1, "--resume", str(assets["generator"])))
    with pytest.raises(SystemExit, match="--generator is required"):
        _run(_args(assets, tmp_path / "o", 1, generator=False))


def test_missing_predictor_names_its_flag(assets, tmp_path):
    args = _args(assets, tmp_path / "o", 1)
    i = args.index("--subjective-predictor")
    del args[i : i + 2]
    with pytest.raises(SystemExit, match="--subjective-predictor is required.*--no-subjective"):
        _run(args)


def test_missing_folders_are_named(assets, tmp_path):
    args = _args(assets, tmp_path / "o", 1)
    args[args.index("--train-dir") + 1] = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit, match=r"--train-dir .*nowhere: no such folder"):
        _run(args)


def test_wrong_checkpoint_kinds_are_refused(assets, tmp_path):
    with pytest.raises(SystemExit, match=r"--aesthetic-predictor: .*gen.safetensors: holds a 'eusr' model"):
        _run(_args(assets, tmp_path / "o", 1, "--aesthetic-predictor", str(assets["generator"])))
    with pytest.raises(SystemExit, match=r"--resume .*'pretrain'-phase checkpoint.*--generator"):
        _run(_args(assets, tmp_path / "o", 1, "--resume", str(assets["generator"]), generator=False))


def test_resume_without_the_discriminator_file_fails_clearly(straight_run, assets, tmp_path):
    import shutil

    shutil.copy(straight_run / "last.safetensors", tmp_path / "last.safetensors")
    with pytest.raises(SystemExit, match=r"last.discriminator.safetensors is missing"):
        _run(_args(assets, tmp_path / "o", 6, "--resume", str(tmp_path / "last.safetensors"), generator=False))


def test_bad_weights_and_everything_off(assets, tmp_path):
    with pytest.raises(SystemExit, match="--alpha-r must be a finite number >= 0, got -1.0"):
        _run(_args(assets, tmp_path / "o", 1, "--alpha-r", "-1"))
    with pytest.raises(SystemExit, match="every loss term is off"):
        _run(_args(assets, tmp_path / "o", 1, "--no-reconstruction", "--no-adversarial", "--alpha-p", "0"))


def test_help_lists_the_main_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        perceptual.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--generator",
        "--aesthetic-predictor",
        "--subjective-predictor",
        "--train-dir",
        "--out",
        "--resume",
        "--no-multipass",
        "--downscale",
        "--alpha-r",
        "--alpha-p",
        "--no-adversarial",
        "--no-aesthetic",
        "--no-subjective",
        "--discriminator-dense",
        "--lr-g",
        "--lr-d",
        "--amp",
        "--threads",
        "--ema",
    ):
        assert flag in text, flag


@pytest.mark.slow
def test_discriminator_warmup_learns_and_leaves_the_joint_batches_alone(straight_run, assets, tmp_path):
    """--d-warmup trains D alone first (its loss falls, D(HR) ends above D(SR)), is recorded
    in the checkpoint, and draws from its own random stream: the joint phase sees the very
    batches of the run without it (same numpy state after the same steps)."""
    out = tmp_path / "warm"
    extra = ("--d-warmup", "40", "--d-warmup-lr", "1e-3", "--d-warmup-batch", "4", "--d-warmup-pool", "8")
    assert _run(_args(assets, out, 4, *extra)) == 0
    log = _read_jsonl(out / "d_warmup_log.jsonl")
    assert [r["step"] for r in log] == [25, 40]
    assert all(math.isfinite(r["loss_d"]) for r in log)
    assert log[-1]["loss_d"] < 0.5 * 2 * math.log(2), log  # chance is 2 ln 2
    assert log[-1]["d_hr"] > log[-1]["d_sr"]
    g = load_checkpoint(out / "last.safetensors")
    info = g.train_state["d_warmup"]
    assert (info["steps"], info["lr"], info["batch"], info["pool"]) == (40, 1e-3, 4, 8)
    assert info["routes"] == list(ROUTES) and info["final_loss_d"] == pytest.approx(log[-1]["loss_d"])
    assert load_checkpoint(straight_run / "last.safetensors").train_state["d_warmup"] is None
    assert g.rng_numpy == load_checkpoint(straight_run / "last.safetensors").rng_numpy
    # the joint phase's generator losses differ only through the warmed-up discriminator
    warm, cold = _read_jsonl(out / "train_log.jsonl")[0], _read_jsonl(straight_run / "train_log.jsonl")[0]
    assert warm["l_r"] == pytest.approx(cold["l_r"], rel=1e-6) and warm["l_g"] != pytest.approx(cold["l_g"], rel=1e-3)
    assert warm["d_hr"] - warm["d_sr"] > cold["d_hr"] - cold["d_sr"]


def test_discriminator_warmup_needs_the_adversarial_term(assets, tmp_path):
    with pytest.raises(SystemExit, match="--d-warmup needs the adversarial term"):
        _run(_args(assets, tmp_path / "x", 2, "--d-warmup", "5", "--no-adversarial"))
    with pytest.raises(SystemExit, match=r"--d-warmup-lr \(default: --lr-d\) must be a finite number > 0, got 0.0"):
        _run(_args(assets, tmp_path / "x", 2, "--d-warmup", "5", "--d-warmup-lr", "0"))


def test_discriminator_warmup_refuses_bad_settings(assets):
    from train.discriminator_warmup import warm_up_discriminator

    data = PatchDataset(assets["train"], [4], lr_patch=8)
    common = dict(
        steps=1,
        lr=1e-4,
        batch=2,
        pool=2,
        seed=0,
        routes=ROUTES,
        downscale="decimate",
        device=torch.device("cpu"),
        progress=False,
    )
    for key, value, expected in (
        ("steps", 0, "steps must be a positive int, got 0"),
        ("pool", 1.5, "pool must be a positive int, got 1.5"),
        ("lr", float("nan"), "lr must be a finite number > 0, got nan"),
    ):
        with pytest.raises(ValueError, match=expected):
            warm_up_discriminator(Discriminator(), build_eusr("tiny"), data, **{**common, key: value})
