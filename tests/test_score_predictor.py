"""Phase 2: NIMA score predictors (train.score_predictor), their data (train.iqa_data) and the
synthetic stand-in data sets (train.synthetic_iqa)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train import score_predictor, synthetic_iqa
from train.checkpoint import CheckpointError, load_checkpoint
from train.iqa_data import (
    MIN_STD,
    IQADataset,
    IQAEntry,
    mean_of,
    read_ava,
    read_tid2013,
    split_ava,
    split_tid2013,
    tid_target,
)
from train.models.nima import CHECKPOINT_KIND, ScorePredictor, emd_loss, load_score_predictor, mean_score
from train.score_predictor import evaluate, plcc, rankdata, srocc

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- loss and metrics ------------------------------------------------------------------------


def test_emd_loss_matches_a_hand_computed_value():
    p1 = torch.tensor([0.2, 0.3, 0.5, 0, 0, 0, 0, 0, 0, 0])
    q1 = torch.tensor([0.0, 0.5, 0.5, 0, 0, 0, 0, 0, 0, 0])
    # CDFs: p1 0.2 0.5 1 1 1 1 1 1 1 1 / q1 0 0.5 1 1 1 1 1 1 1 1 -> differences 0.2, then nine 0s
    # r = 2: sqrt((0.2² + 0) / 10) = sqrt(0.004) = 0.0632456
    p2 = torch.zeros(10)
    p2[0] = 1.0  # every vote for score 1: CDF 1 1 1 1 1 1 1 1 1 1
    q2 = torch.zeros(10)
    q2[9] = 1.0  # every vote for score 10: CDF 0 0 0 0 0 0 0 0 0 1 -> nine differences of 1
    # r = 2: sqrt(9 / 10) = 0.9486833
    assert float(emd_loss(p1[None], q1[None])) == pytest.approx(0.0632456, abs=1e-6)
    assert float(emd_loss(p2[None], q2[None])) == pytest.approx(0.9486833, abs=1e-6)
    both = emd_loss(torch.stack([p1, p2]), torch.stack([q1, q2]))
    assert float(both) == pytest.approx((0.0632456 + 0.9486833) / 2, abs=1e-6)
    # r = 1: mean |difference| = 0.02 and 0.9
    assert float(emd_loss(torch.stack([p1, p2]), torch.stack([q1, q2]), r=1.0)) == pytest.approx(0.46, abs=1e-6)
    assert float(emd_loss(q1[None], q1[None])) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        emd_loss(p1[None], q1[None, :5])


def test_mean_score():
    probs = torch.zeros(3, 10)
    probs[0, 9] = 1.0
    probs[1] = 0.1
    probs[2, 2] = probs[2, 4] = 0.5
    assert mean_score(probs).tolist() == pytest.approx([10.0, 5.5, 4.0])
    assert mean_of(probs.numpy()).tolist() == pytest.approx([10.0, 5.5, 4.0])


def test_rank_correlations_agree_with_scipy(rng):
    stats = pytest.importorskip("scipy.stats")
    x = rng.integers(0, 6, 40).astype(float)  # many ties
    y = x + rng.normal(0, 2.0, 40)
    y[:5] = y[5]
    np.testing.assert_allclose(rankdata(x), stats.rankdata(x))
    np.testing.assert_allclose(rankdata(y), stats.rankdata(y))
    assert srocc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert rankdata([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert srocc([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert srocc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(plcc([1, 1, 1], [1, 2, 3])) and math.isnan(srocc([5], [5]))


# --- AVA reader ------------------------------------------------------------------------------


def _ava_line(i: int, image_id: int, counts: list[int]) -> str:
    return " ".join(map(str, [i, image_id, *counts, 12, 34, 1396]))


@pytest.fixture
def ava_root(tmp_path):
    root = tmp_path / "ava"
    (root / "images").mkdir(parents=True)
    for image_id in (953619, 953958, 954184):
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(root / "images" / f"{image_id}.jpg")
    lines = [
        _ava_line(1, 953619, [0, 1, 5, 17, 38, 36, 15, 6, 5, 1]),
        _ava_line(2, 953958, [10, 7, 15, 26, 26, 21, 10, 8, 1, 2]),
        _ava_line(3, 954184, [0, 0, 0, 0, 0, 0, 0, 0, 0, 4]),
    ]
    (root / "AVA.txt").write_text("\n".join(lines) + "\n\n")
    return root


def test_ava_reader_reads_vote_histograms(ava_root):
    entries = read_ava(ava_root / "AVA.txt")
    assert [e.name for e in entries] == ["953619", "953958", "954184"]
    counts = np.array([0, 1, 5, 17, 38, 36, 15, 6, 5, 1], float)
    np.testing.assert_allclose(entries[0].target, counts / counts.sum())
    assert entries[0].path == ava_root / "images" / "953619.jpg"
    assert entries[2].mean == pytest.approx(10.0)
    assert all(e.target.sum() == pytest.approx(1.0) for e in entries)


@pytest.mark.parametrize(
    "line, needle",
    [
        ("4 955000 1 2 3", "found 5 fields"),
        (_ava_line(4, 955000, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).replace(" 7 ", " 7.5 "), "field 9 is '7.5'"),
        (_ava_line(4, 955000, [0] * 10), "has no votes"),
        (_ava_line(4, 955000, [1, -2, 3, 0, 0, 0, 0, 0, 0, 0]), "negative vote count"),
        (_ava_line(4, 953619, [1] * 10), "listed again (first on line 1)"),
    ],
)
def test_ava_reader_rejects_malformed_lines(ava_root, line, needle):
    path = ava_root / "AVA.txt"
    path.write_text(path.read_text().rstrip("\n") + "\n" + line + "\n")
    with pytest.raises(ValueError) as exc:
        read_ava(path)
    msg = str(exc.value)
    assert str(path) in msg and "line 4" in msg and needle in msg, msg


def test_ava_reader_skips_missing_images_and_says_so(ava_root, caplog):
    (ava_root / "images" / "953958.jpg").unlink()
    with caplog.at_level(logging.WARNING):
        entries = read_ava(ava_root / "AVA.txt")
    assert [e.name for e in entries] == ["953619", "954184"]
    assert "1 of 3 listed images have no file" in caplog.text and "953958.jpg" in caplog.text
    for p in (ava_root / "images").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="none of the 3 listed images was found"):
        read_ava(ava_root / "AVA.txt")


def test_ava_reader_missing_or_empty_file(ava_root):
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_ava(ava_root / "nothere.txt")
    (ava_root / "AVA.txt").write_text("\n")
    with pytest.raises(ValueError, match="holds no entries"):
        read_ava(ava_root / "AVA.txt")


def _entries(n: int, group=lambda i: 0) -> list[IQAEntry]:
    return [IQAEntry(name=str(i), path=Path(f"{i}.jpg"), target=np.full(10, 0.1), group=group(i)) for i in range(n)]


def test_ava_split_holds_out_a_count_or_a_fraction():
    big = _entries(12_000)
    train, val = split_ava(big, val_count=5000, seed=3)
    assert len(val) == 5000 and len(train) == 7000
    assert {e.name for e in train}.isdisjoint(e.name for e in val)
    again = split_ava(big, val_count=5000, seed=3)[1]
    assert [e.name for e in again] == [e.name for e in val]  # deterministic by seed
    assert [e.name for e in split_ava(big, val_count=5000, seed=4)[1]] != [e.name for e in val]
    assert [int(e.name) for e in val] == sorted(int(e.name) for e in val)  # file order kept
    small_train, small_val = split_ava(_entries(50), val_count=5000, val_fraction=0.2)
    assert len(small_val) == 10 and len(small_train) == 40
    with pytest.raises(ValueError, match="at least 2 images"):
        split_ava(_entries(1))


# --- TID2013 reader --------------------------------------------------------------------------


@pytest.fixture
def tid_root(tmp_path):
    root = tmp_path / "tid"
    (root / "distorted_images").mkdir(parents=True)
    names = ["i01_01_1.bmp", "i02_05_3.bmp", "i04_01_1.bmp", "i25_24_5.bmp"]
    for name in names:  # TID2013 ships some names in upper case
        disk = name.upper().replace(".BMP", ".bmp") if name.startswith("i04") else name
        Image.fromarray(np.full((6, 6, 3), 50, np.uint8)).save(root / "distorted_images" / disk)
    (root / "mos_with_names.txt").write_text(
        "5.51429 i01_01_1.bmp\r\n4.0 i02_05_3.bmp\r\n3.0 I04_01_1.BMP\r\n0.24 i25_24_5.bmp\r\n"
    )
    (root / "mos_std.txt").write_text("0.8\n1.0\n0.0\n0.5\n")
    return root


def test_tid_reader_reads_mos_and_std_case_insensitively(tid_root):
    entries = read_tid2013(tid_root)
    assert [e.name for e in entries] == ["i01_01_1.bmp", "i02_05_3.bmp", "I04_01_1.BMP", "i25_24_5.bmp"]
    assert [e.group for e in entries] == [1, 2, 4, 25]
    assert entries[2].path.name == "I04_01_1.bmp"  # found despite the different case
    np.testing.assert_allclose(entries[0].target, tid_target(5.51429, 0.8))
    assert entries[2].target.argmax() == 3 and entries[2].target.max() == pytest.approx(
        1.0
    )  # MOS 3 + 1 = score 4, std 0


@pytest.mark.parametrize(
    "mos, std, needle, where",
    [
        ("5.5 i01_01_1.bmp extra\n", "0.8\n", "found 3 fields", "mos_with_names.txt, line 1"),
        ("five i01_01_1.bmp\n", "0.8\n", "MOS 'five' is not a number", "mos_with_names.txt, line 1"),
        (
            "5.5 i01_01_1.bmp\n9.5 i02_05_3.bmp\n",
            "0.8\n0.8\n",
            "outside TID2013's range [0, 9]",
            "mos_with_names.txt, line 2",
        ),
        ("5.5 image_01.bmp\n", "0.8\n", "does not look like TID2013's", "mos_with_names.txt, line 1"),
        ("5.5 i01_01_1.bmp\n", "0.8 0.1\n", "expected one number", "mos_std.txt, line 1"),
        ("5.5 i01_01_1.bmp\n", "-0.3\n", "negative or not finite", "mos_std.txt, line 1"),
        ("5.5 i01_01_1.bmp\n", "nan\n", "negative or not finite", "mos_std.txt, line 1"),
        (
            "5.5 i01_01_1.bmp\n4 i01_01_1.bmp\n",
            "0.8\n0.8\n",
            "listed again (first on line 1)",
            "mos_with_names.txt, line 2",
        ),
    ],
)
def test_tid_reader_rejects_malformed_lines(tid_root, mos, std, needle, where):
    (tid_root / "mos_with_names.txt").write_text(mos)
    (tid_root / "mos_std.txt").write_text(std)
    with pytest.raises(ValueError) as exc:
        read_tid2013(tid_root)
    msg = str(exc.value)
    assert needle in msg and where in msg, msg


def test_tid_reader_std_count_mismatch(tid_root):
    (tid_root / "mos_std.txt").write_text("0.8\n1.0\n")
    with pytest.raises(ValueError, match=r"mos_std.txt has 2 values but .*mos_with_names.txt lists 4 images"):
        read_tid2013(tid_root)


def test_tid_reader_missing_files(tid_root, caplog):
    (tid_root / "distorted_images" / "i02_05_3.bmp").unlink()
    with caplog.at_level(logging.WARNING):
        assert len(read_tid2013(tid_root)) == 3
    assert "1 of 4 listed images have no file" in caplog.text
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        read_tid2013(tid_root, tid_root / "elsewhere")
    (tid_root / "mos_std.txt").unlink()
    with pytest.raises(FileNotFoundError, match="mos_std.txt"):
        read_tid2013(tid_root)


def test_tid_gaussian_target():
    for mos, std in [(4.5, 0.8), (3.2, 1.1), (6.0, 0.6), (2.5, 0.9)]:
        t = tid_target(mos, std)
        assert t.shape == (10,) and t.sum() == pytest.approx(1.0) and (t >= 0).all()
        assert mean_of(t) == pytest.approx(mos + 1.0, abs=0.01)  # range shifted [0, 9] -> [1, 10]
        assert abs(t.argmax() + 1 - (mos + 1.0)) <= 0.5
    np.testing.assert_allclose(tid_target(4.0, 0.0), np.eye(10)[4])  # std 0: all on score 5
    np.testing.assert_allclose(tid_target(4.5, MIN_STD / 10)[4:6], [0.5, 0.5])  # exact tie: halved
    edge = tid_target(8.9, 1.0)  # truncated at 10: mean pulled below MOS + 1
    assert edge.sum() == pytest.approx(1.0) and mean_of(edge) < 9.9
    assert np.all(np.isfinite(tid_target(0.0, 1e-9)))


def test_tid_split_puts_references_1_to_3_in_validation():
    entries = _entries(25 * 4, group=lambda i: i // 4 + 1)
    train, val = split_tid2013(entries)
    assert {e.group for e in val} == {1, 2, 3} and len(val) == 12
    assert {e.group for e in train} == set(range(4, 26)) and len(train) == 88
    with pytest.raises(ValueError, match="no image belongs"):
        split_tid2013(entries, val_refs=[30])
    with pytest.raises(ValueError, match="nothing left to train on"):
        split_tid2013(entries, val_refs=range(1, 26))


# --- crops -----------------------------------------------------------------------------------


@pytest.fixture
def ramp_entries(tmp_path):
    """A 60×90 image with unique pixels (positions recoverable) and a small 20×30 one."""
    yy, xx = np.mgrid[0:60, 0:90]
    big = np.stack([yy * 4, xx * 2, (yy + xx) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(big[:20, :30]).save(tmp_path / "small.png")
    t = tid_target(4.0, 0.7)
    return big, [IQAEntry("big", tmp_path / "big.png", t), IQAEntry("small", tmp_path / "small.png", t)]


def test_dataset_training_crops_are_random_windows_and_flips(ramp_entries):
    big, entries = ramp_entries
    ds = IQADataset(entries[:1], crop=32, resize=0, train=True)
    rng = np.random.default_rng(0)
    positions, flips = set(), 0
    for _ in range(40):
        c = ds.item(0, rng)
        assert c.shape == (32, 32, 3) and c.dtype == np.uint8
        flipped = c[0, 0, 1] > c[0, -1, 1]  # x increases to the right unless flipped
        flips += flipped
        c = c[:, ::-1] if flipped else c
        top, left = int(c[0, 0, 0]) // 4, int(c[0, 0, 1]) // 2
        np.testing.assert_array_equal(c, big[top : top + 32, left : left + 32])
        positions.add((top, left))
    assert len(positions) > 10 and 5 < flips < 35
    x, t = ds.batch([0, 0], np.random.default_rng(0))
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32 and t.shape == (2, 10)
    with pytest.raises(ValueError, match="numpy Generator"):
        ds.item(0)


def test_dataset_validation_takes_the_centre_crop(ramp_entries):
    big, entries = ramp_entries
    ds = IQADataset(entries[:1], crop=32, resize=0, train=False)
    np.testing.assert_array_equal(ds.item(0), big[14:46, 29:61])


def test_dataset_resizes_shorter_side_and_upscales_small_images(ramp_entries):
    _, entries = ramp_entries
    ds = IQADataset(entries, crop=32, resize=40, train=False)
    assert ds.image(0).shape == (40, 60, 3)  # 60×90 -> shorter side 40
    assert ds.image(1).shape == (40, 60, 3)  # 20×30 -> 40×60
    native = IQADataset(entries, crop=32, resize=0, train=False)
    assert native.image(0).shape == (60, 90, 3) and native.image(1).shape == (32, 48, 3)  # too small: up to the crop
    with pytest.raises(ValueError, match="resize 16 is smaller than the crop 32"):
        IQADataset(entries, crop=32, resize=16)


# --- synthetic data sets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_tid(tmp_path_factory, photos_dir):
    out = tmp_path_factory.mktemp("syn_tid")
    assert (
        synthetic_iqa.main(
            [
                "--photos",
                str(photos_dir / "train"),
                "--out",
                str(out),
                "--format",
                "tid2013",
                "--references",
                "12",
                "--size",
                "80",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    return out


def test_synthetic_tid_set_reads_back_with_monotone_scores(synthetic_tid):
    entries = read_tid2013(synthetic_tid)
    assert len(entries) == 12 * 19
    train, val = split_tid2013(entries)
    assert len(val) == 3 * 19 and {e.group for e in val} == {1, 2, 3}
    meta = json.loads((synthetic_tid / "synthetic.json").read_text())
    assert "SYNTHETIC" in meta["note"] and "NOT TID2013" in (synthetic_tid / "README.txt").read_text()
    by_name = {e.name: e for e in entries}
    for ref in range(1, 13):
        pristine = by_name[f"i{ref:02d}_00_0.bmp"].mean
        assert 8.0 < pristine < 9.3
        for kind, levels in ((1, 5), (2, 3), (3, 5), (4, 5)):
            means = [by_name[f"i{ref:02d}_{kind:02d}_{lvl}.bmp"].mean for lvl in range(1, levels + 1)]
            assert pristine > means[0] and all(a > b for a, b in zip(means, means[1:])), (ref, kind, means)
            assert 1.2 < means[-1] < 3.0
    img = np.asarray(Image.open(synthetic_tid / "distorted_images" / "i04_02_3.bmp"))
    assert img.shape == (80, 80, 3)


def test_synthetic_sets_are_deterministic_and_ava_reads_back(photos_dir, tmp_path):
    args = ["--photos", str(photos_dir / "train"), "--format", "ava", "--count", "30", "--size", "48"]
    assert synthetic_iqa.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert synthetic_iqa.main([*args, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "AVA.txt").read_text() == (tmp_path / "b" / "AVA.txt").read_text()
    entries = read_ava(tmp_path / "a" / "AVA.txt")
    assert len(entries) == 30
    meta = json.loads((tmp_path / "a" / "synthetic.json").read_text())["images"]
    q = np.array([m["quality"] for m in meta])
    votes_mean = np.array([e.mean for e in entries])
    assert np.corrcoef(q, votes_mean)[0, 1] > 0.9  # histograms drawn around the quality
    for line in (tmp_path / "a" / "AVA.txt").read_text().splitlines():
        assert len(line.split()) == 15
    with pytest.raises(SystemExit, match="--size 4000 needs photos at least that large"):
        synthetic_iqa.main([*args[:-2], "--size", "4000", "--out", str(tmp_path / "c")])


# --- training --------------------------------------------------------------------------------


def _train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        "tid2013",
        "--root",
        str(root),
        "--out",
        str(out),
        "--crop",
        "64",
        "--resize",
        "0",
        "--batch-a",
        "16",
        "--batch-b",
        "8",
        "--lr-b",
        "1e-4",
        "--threads",
        "1",
        "--quiet",
        "--device",
        "cpu",
        "--log-every",
        "10",
        *extra,
    ]


@pytest.fixture(scope="module")
def learned_run(synthetic_tid, tmp_path_factory):
    out = tmp_path_factory.mktemp("learned")
    threads = torch.get_num_threads()
    try:
        assert (
            score_predictor.main(
                _train_args(
                    synthetic_tid, out, "--steps-a", "150", "--steps-b", "20", "--val-every", "50", "--seed", "0"
                )
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
def test_training_beats_the_constant_predictor(learned_run):
    val = _jsonl(learned_run / "val_log.jsonl")
    assert [r["step"] for r in val] == [50, 100, 150, 170]
    assert [r["stage"] for r in val] == ["A", "A", "A", "B"]
    last = val[-1]
    assert last["n"] == 57
    for key in ("emd", "baseline_emd", "srocc", "plcc", "beats_baseline"):
        assert key in last, key
    assert last["emd"] < last["baseline_emd"] - 0.01, last
    assert last["beats_baseline"] is True
    assert last["srocc"] > 0.2 and last["plcc"] > 0.2, last
    train = _jsonl(learned_run / "train_log.jsonl")
    assert train[0]["stage"] == "A" and train[-1]["stage"] == "B" and train[-1]["step"] == 170
    assert train[-1]["lr"] == pytest.approx(1e-4) and train[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.slow
def test_checkpoints_load_as_score_predictors(learned_run, synthetic_tid):
    last = load_checkpoint(learned_run / "last.safetensors", expect_kind=CHECKPOINT_KIND)
    assert last.kind == "score_predictor" and last.config["dataset"] == "tid2013" and last.config["input_size"] == 64
    assert last.train_state["step"] == 170 and last.train_state["stage"] == "B"
    assert last.optim_groups and last.rng_numpy is not None and last.rng_torch is not None
    best = load_checkpoint(learned_run / "best.safetensors", expect_kind=CHECKPOINT_KIND)
    val = _jsonl(learned_run / "val_log.jsonl")
    assert best.train_state["val"]["emd"] == pytest.approx(min(r["emd"] for r in val))
    model = load_score_predictor(learned_run / "best.safetensors")
    assert isinstance(model, ScorePredictor) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    # the loaded model reproduces the logged validation numbers
    entries = read_tid2013(synthetic_tid)
    _, val_entries = split_tid2013(entries)
    ds = IQADataset(val_entries, crop=64, resize=0, train=False)
    crops = np.stack([ds.item(i) for i in range(len(ds))])
    res = evaluate(model, crops, ds.targets, device=torch.device("cpu"))
    assert res["emd"] == pytest.approx(best.train_state["val"]["emd"], abs=1e-5)
    with pytest.raises(CheckpointError, match="holds a 'score_predictor' model"):
        load_checkpoint(learned_run / "last.safetensors")  # not an EUSR checkpoint


def test_training_stage_a_leaves_the_backbone_alone(synthetic_tid, tmp_path):
    out = tmp_path / "a_only"
    assert (
        score_predictor.main(_train_args(synthetic_tid, out, "--steps-a", "3", "--steps-b", "0", "--crop", "32")) == 0
    )
    from train.models.mobilenet_v2 import MobileNetV2, bundled_imagenet_weights, load_imagenet_weights

    state = load_checkpoint(out / "last.safetensors", expect_kind=CHECKPOINT_KIND).model_state
    if bundled_imagenet_weights() is not None:
        ref = load_imagenet_weights(MobileNetV2(), bundled_imagenet_weights()).state_dict()
        for k, v in ref.items():
            if k.startswith("features."):
                assert torch.equal(state[f"backbone.{k}"], v), k  # weights and BN statistics untouched


def test_evaluate_baseline_is_the_prior_emd():
    torch.manual_seed(0)
    model = ScorePredictor()
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    targets = np.stack([tid_target(m, 0.8) for m in (2.0, 5.0, 7.0)]).astype(np.float32)
    prior = targets.mean(axis=0)
    res = evaluate(model, images, targets, device=torch.device("cpu"), prior=prior)
    expected = float(emd_loss(torch.from_numpy(prior).expand(3, 10), torch.from_numpy(targets)))
    assert res["baseline_emd"] == pytest.approx(expected)
    assert res["n"] == 3 and res["gt_mean_score"] == pytest.approx(np.mean([3.0, 6.0, 8.0]), abs=0.01)


# --- resume ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_args(synthetic_tid):
    def make(out: Path, *extra: str) -> list[str]:
        return _train_args(
            synthetic_tid,
            out,
            "--crop",
            "32",
            "--steps-a",
            "3",
            "--steps-b",
            "3",
            "--batch-a",
            "4",
            "--batch-b",
            "4",
            "--no-imagenet",
            "--seed",
            "7",
            "--log-every",
            "1",
            "--val-every",
            "2",
            *extra,
        )

    return make


@pytest.fixture(scope="module")
def straight_tiny(tiny_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    assert score_predictor.main(tiny_args(out)) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("split_at", [4, 3])  # mid stage B; at the A/B boundary
def test_resume_is_bit_exact(straight_tiny, tiny_args, tmp_path, split_at):
    out = tmp_path / "split"
    assert score_predictor.main(tiny_args(out, "--max-steps", str(split_at))) == 0
    first = load_checkpoint(out / "last.safetensors", expect_kind=CHECKPOINT_KIND)
    assert first.train_state["step"] == split_at
    assert first.train_state["stage"] == ("B" if split_at > 3 else "A")
    assert score_predictor.main(tiny_args(out, "--resume", str(out / "last.safetensors"))) == 0
    a = load_checkpoint(straight_tiny / "last.safetensors", expect_kind=CHECKPOINT_KIND)
    b = load_checkpoint(out / "last.safetensors", expect_kind=CHECKPOINT_KIND)
    assert b.train_state["step"] == 6
    for k in a.model_state:
        assert torch.equal(a.model_state[k], b.model_state[k]), f"weight {k} differs after resume"
    assert a.optim_state.keys() == b.optim_state.keys() and a.optim_state
    for k in a.optim_state:
        assert torch.equal(a.optim_state[k], b.optim_state[k]), k
    assert a.rng_numpy == b.rng_numpy and torch.equal(a.rng_torch, b.rng_torch)
    la, lb = _jsonl(straight_tiny / "train_log.jsonl"), _jsonl(out / "train_log.jsonl")
    assert [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_resume_refuses_changed_stage_a(straight_tiny, tiny_args, tmp_path):
    args = tiny_args(tmp_path / "o", "--resume", str(straight_tiny / "last.safetensors"))
    args[args.index("--steps-a") + 1] = "5"
    with pytest.raises(SystemExit, match="stage A of the run has 3 steps, these flags give 5"):
        score_predictor.main(args)


def test_resume_at_the_end_does_nothing(straight_tiny, tiny_args, tmp_path):
    out = tmp_path / "again"
    assert score_predictor.main(tiny_args(out, "--resume", str(straight_tiny / "last.safetensors"))) == 0
    assert not (out / "last.safetensors").exists() and _jsonl(out / "train_log.jsonl") == []


# --- command-line errors ---------------------------------------------------------------------


def test_bad_inputs_name_the_file_or_flag(synthetic_tid, tiny_args, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("garbage")
    cases = [
        (["--resume", str(bad)], r"error: --resume: .*bad.safetensors"),
        (["--imagenet-weights", str(tmp_path / "none.pth")], r"error: --imagenet-weights: .*none.pth"),
        (["--crop", "64", "--resize", "48"], r"error: --resize 48 is smaller than --crop 64"),
        (["--val-refs", "40"], r"error: --val-refs 40: no image belongs"),
        (["--val-refs", "a,b"], r"error: --val-refs expects comma-separated integers"),
        (["--batch-a", "0"], r"error: --batch-a must be at least 1"),
        (["--steps-a", "0", "--steps-b", "0"], r"error: both stages have 0 steps"),
    ]
    for extra, pattern in cases:
        args = [a for a in tiny_args(tmp_path / "o", *extra)]
        if "--imagenet-weights" in extra:
            args.remove("--no-imagenet")
        with pytest.raises(SystemExit, match=pattern):
            score_predictor.main(args)
    with pytest.raises(SystemExit, match="give --imagenet-weights or --no-imagenet, not both"):
        score_predictor.main(tiny_args(tmp_path / "o", "--imagenet-weights", "x.pth"))
    missing = tiny_args(tmp_path / "o")
    missing[missing.index("--root") + 1] = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit, match=r"error: .*nowhere/mos_with_names.txt.*not found"):
        score_predictor.main(missing)


def test_resume_refuses_another_dataset(straight_tiny, tiny_args, tmp_path):
    args = tiny_args(tmp_path / "o", "--resume", str(straight_tiny / "last.safetensors"))
    args[args.index("--dataset") + 1] = "ava"
    with pytest.raises(SystemExit, match="trained on 'tid2013', but --dataset is 'ava'"):
        score_predictor.main(args)
    best = tiny_args(tmp_path / "o", "--resume", str(straight_tiny / "best.safetensors"))
    with pytest.raises(SystemExit, match="holds no training state"):
        score_predictor.main(best)


def test_malformed_dataset_file_reaches_the_cli_as_an_error(synthetic_tid, tiny_args, tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    (root / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp\nbroken\n")
    (root / "mos_std.txt").write_text("0.5\n0.5\n")
    args = tiny_args(tmp_path / "o", "--images", str(synthetic_tid / "distorted_images"))
    args[args.index("--root") + 1] = str(root)
    with pytest.raises(SystemExit, match=r"error: .*mos_with_names.txt, line 2: found 1 fields"):
        score_predictor.main(args)


def test_help_lists_the_recipe_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        score_predictor.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in (
        "--dataset",
        "--root",
        "--images",
        "--imagenet-weights",
        "--no-imagenet",
        "--epochs-a",
        "--steps-b",
        "--batch-a",
        "--lr-b",
        "--crop",
        "--resize",
        "--val-count",
        "--resume",
        "--max-steps",
        "--amp",
        "--seed",
    ):
        assert opt in text, opt


def test_ava_training_runs_from_the_cli(photos_dir, tmp_path):
    root = tmp_path / "ava"
    assert (
        synthetic_iqa.main(
            [
                "--photos",
                str(photos_dir / "train"),
                "--out",
                str(root),
                "--format",
                "ava",
                "--count",
                "20",
                "--size",
                "40",
            ]
        )
        == 0
    )
    out = tmp_path / "run"
    args = [
        "--dataset",
        "ava",
        "--root",
        str(root),
        "--out",
        str(out),
        "--crop",
        "32",
        "--resize",
        "0",
        "--steps-a",
        "2",
        "--steps-b",
        "1",
        "--batch-a",
        "4",
        "--batch-b",
        "2",
        "--no-imagenet",
        "--threads",
        "1",
        "--quiet",
        "--device",
        "cpu",
        "--val-fraction",
        "0.25",
    ]
    assert score_predictor.main(args) == 0
    val = _jsonl(out / "val_log.jsonl")
    assert val[-1]["step"] == 3 and val[-1]["n"] == 5  # 20 images, a quarter held out
    ck = load_checkpoint(out / "last.safetensors", expect_kind=CHECKPOINT_KIND)
    assert ck.config["dataset"] == "ava" and ck.train_state["n_train"] == 15
