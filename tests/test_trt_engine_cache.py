"""Engine cache key and cache folder (export/engine_cache.py): no TensorRT needed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from enum import Enum
from pathlib import Path

import pytest

from export.engine_cache import (
    BuildOptions,
    BuildOptionsError,
    EngineCache,
    Precision,
    atomic_write_bytes,
    cache_key,
)

BASE = dict(onnx_sha256="ab" * 32, trt_version="10.16.1.11", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
OPTIONS = BuildOptions(precision=Precision.FP16)

# A value different from the default, for fields whose default is None (others: +1 or the next enum member).
SAMPLES = {"opt_level": 5, "workspace": 1 << 30}


def _changed(field: dataclasses.Field, value: object) -> object:
    if isinstance(value, Enum):
        members = list(type(value))
        return members[(members.index(value) + 1) % len(members)]
    if isinstance(value, bool):
        return not value
    if field.name in SAMPLES:
        assert SAMPLES[field.name] != value
        return SAMPLES[field.name]
    if isinstance(value, int) and not isinstance(value, bool):
        return value + 1
    raise AssertionError(f"add a changed value for the new build option {field.name!r} to SAMPLES")


def test_key_is_a_deterministic_sha256() -> None:
    key = cache_key(options=OPTIONS, **BASE)
    assert key == cache_key(options=BuildOptions(precision="fp16"), **BASE)
    assert len(key) == 64 and int(key, 16) >= 0


@pytest.mark.parametrize("field", dataclasses.fields(BuildOptions), ids=lambda f: f.name)
def test_key_changes_with_every_build_option(field: dataclasses.Field) -> None:
    changed = dataclasses.replace(OPTIONS, **{field.name: _changed(field, getattr(OPTIONS, field.name))})
    assert changed != OPTIONS
    assert cache_key(options=changed, **BASE) != cache_key(options=OPTIONS, **BASE), field.name


@pytest.mark.parametrize("name", sorted(BASE))
def test_key_changes_with_onnx_tensorrt_and_gpu(name: str) -> None:
    other = {**BASE, name: BASE[name] + "x"}
    assert cache_key(options=OPTIONS, **other) != cache_key(options=OPTIONS, **BASE)


def test_every_option_is_in_the_serialised_options() -> None:
    assert list(OPTIONS.to_dict()) == [f.name for f in dataclasses.fields(BuildOptions)]
    assert BuildOptions.from_dict(OPTIONS.to_dict()) == OPTIONS
    json.dumps(OPTIONS.to_dict())  # JSON-ready (enums as values)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(precision="bf16"), "--precision must be one of ['fp32', 'fp16', 'int8'], got 'bf16'"),
        (dict(tile=0), "--tile must be an integer >= 1, got 0"),
        (dict(halo=-1), "--halo must be an integer >= 0, got -1"),
        (dict(batch=2, min_batch=3), "--min-batch 3 must not exceed --batch 2"),
        (
            dict(tile=16, halo=4, min_window=32),
            "--min-window 32 must not exceed the window tile + 2*halo = 16 + 2*4 = 24",
        ),
        (dict(opt_level=6), "--opt-level must be an integer 0..5"),
        (dict(profiles=0), "--profiles must be an integer >= 1"),
        (dict(workspace=0), "--workspace must be an integer >= 1"),
        (dict(batch=True), "--batch must be an integer >= 1, got True"),
        (dict(allow_tf32=1), "--allow-tf32 must be True or False, got 1"),
    ],
)
def test_bad_options_name_the_flag(kwargs: dict, text: str) -> None:
    with pytest.raises(BuildOptionsError) as info:
        BuildOptions(**{"precision": "fp32", **kwargs})
    assert text in str(info.value)


def test_profile_shapes_follow_the_layout() -> None:
    opts = BuildOptions(precision="fp32", tile=100, halo=10, batch=6, min_batch=2, min_window=40)
    assert opts.window == 120
    assert opts.profile_shapes("float32-nchw") == ((2, 3, 40, 40), (6, 3, 120, 120), (6, 3, 120, 120))
    assert opts.profile_shapes("uint8-nhwc") == ((2, 40, 40, 3), (6, 120, 120, 3), (6, 120, 120, 3))


def _sidecar(key: str, plan: bytes) -> dict:
    return {"cache_key": key, "engine_sha256": hashlib.sha256(plan).hexdigest(), "format": 1}


def test_cache_reuses_only_a_consistent_entry_that_deserialises(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "cache")
    key, plan = "k" * 64, b"plan bytes"
    assert cache.lookup(key, lambda p: True) is None
    path = cache.store(key, plan, _sidecar(key, plan))
    assert path == tmp_path / "cache" / f"{key}.plan" and path.read_bytes() == plan
    hit = cache.lookup(key, lambda p: p == plan)
    assert hit is not None and hit[0] == plan and hit[1]["engine"] == path.name
    assert cache.lookup(key, lambda p: False) is None  # does not deserialise: rebuild
    Path(f"{path}.json").write_text(json.dumps(_sidecar("other", plan)))
    assert cache.lookup(key, lambda p: True) is None  # sidecar names another key
    Path(f"{path}.json").write_text(json.dumps(_sidecar(key, b"another plan")))
    assert cache.lookup(key, lambda p: True) is None  # plan replaced behind the sidecar's back
    Path(f"{path}.json").write_text("{not json")
    assert cache.lookup(key, lambda p: True) is None
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{key}.plan", f"{key}.plan.json"]


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model.plan"
    atomic_write_bytes(target, b"old")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would make it, not mkstemp's 0600

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.plan"]
