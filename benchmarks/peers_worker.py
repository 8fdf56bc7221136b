"""The measuring half of ``benchmarks/peers.py``: one process per (configuration, threads).

Why a process per group: thread pools are set once per process (``torch.set_num_threads``,
OpenVINO's and ONNX Runtime's pools), and a fresh process gives every group the same
starting memory, so peak RSS rows compare. ``peers.py`` writes a spec JSON, runs
``python -m benchmarks.peers_worker SPEC OUT`` and reads the rows back.

Per image size, with ``order`` "round-robin" (the default), in three phases (``"blocks"``
runs them row by row instead, each row closed before the next: one row's memory at a time):

1. **Set-up and warm-up**, row by row: the kernel's peak-RSS mark is reset
   (``/proc/self/clear_refs``), the runner is made (session, compiled model) and called
   ``warmup`` times on the uint8 image; the row's peak RSS is the mark after that, its
   growth the mark minus the RSS before.
2. **Timed round robin**: repeat *i* of every row, then repeat *i + 1*, so a change of
   machine load hits every row alike and the ratios of one size compare like for like.
3. **Accuracy**: each row once more on the float32 copy of the image (the runtime then
   returns the raw model output, unrounded), against PyTorch eager float32 on the whole
   image with the row's mirrored border context (the runtime's halo; none for whole rows
   and torch): PSNR (peak 255) and max |Δ|; tiled rows also against their own backend in
   one window with the same border (the seam check; the naive tiler against torch-whole),
   and the timed uint8 output against torch's rounded one.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib
import dataclasses
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.naive_tiler import tile_boxes, tile_process
from benchmarks.rss import peak_rss_mib, reset_peak_rss, row_peak_rss_mib
from benchmarks.throughput_models import quiet_halo_warning, torch_uint8_runner
from benchmarks.timing import summarize

__all__ = ["ROW_KINDS", "WHOLE_OF", "Runner", "load_image", "measure_group", "main"]

ROW_KINDS = (
    "default",
    "default-int8",
    "ort-whole",
    "ort-tiled",
    "ov-fp32-whole",
    "ov-fp32-tiled",
    "ov-int8-whole",
    "ov-int8-tiled",
    "torch-whole",
    "torch-tiled-naive",
)
"""Every row of a (configuration, size, threads) group, in the order they are set up."""

INT8_KINDS = ("default-int8", "ov-int8-whole", "ov-int8-tiled")
WHOLE_OF = {
    "ort-tiled": "ort-whole",
    "ov-fp32-tiled": "ov-fp32-whole",
    "ov-int8-tiled": "ov-int8-whole",
    "torch-tiled-naive": "torch-whole",
}
"""Each fixed-tile row's whole-image sibling (same backend and model): its seam and cost reference."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- image


def load_image(spec: dict[str, Any], width: int, height: int) -> tuple[np.ndarray, str]:
    """The uint8 H×W×3 benchmark image: the photo ``spec["image"]`` centre-cropped to the
    aspect ratio and resized (PIL bicubic) to W×H, or seeded noise when no photo is given."""
    path = spec.get("image")
    if path:
        from PIL import Image

        with Image.open(path) as src:
            im = src.convert("RGB")
            w0, h0 = im.size
            if w0 * height > h0 * width:  # too wide: crop the sides
                cw, ch = round(h0 * width / height), h0
            else:
                cw, ch = w0, round(w0 * height / width)
            left, top = (w0 - cw) // 2, (h0 - ch) // 2
            im = im.crop((left, top, left + cw, top + ch)).resize((width, height), Image.Resampling.BICUBIC)
            return np.array(im, dtype=np.uint8, copy=True), f"{Path(path).name} (crop {cw}x{ch}, bicubic)"
    rng = np.random.default_rng(spec["seed"])
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8), f"uniform noise, seed {spec['seed']}"


# --------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """One row: how to run it on uint8 and on float32 input, and what it computes."""

    kind: str
    run_uint8: Callable[[np.ndarray], np.ndarray]
    run_float: Callable[[np.ndarray], np.ndarray]
    settings: dict[str, Any]
    computed_px: int | None
    """LR pixels of model input per image (windows × window area; the image for whole rows)."""
    precision: str = "fp32"
    close: Callable[[], None] = lambda: None
    extra: dict[str, Any] = field(default_factory=dict)
    seam_reference: Callable[[np.ndarray], np.ndarray] | None = None
    """Float output of the same backend, model and border context in one window (tiled
    Upscaler rows): what the row computes without seams."""


def _options_record(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    return {"class": type(options).__name__, "name": options.name, **dataclasses.asdict(options)}


def _with_threads(options: Any, threads: int) -> Any:
    """``options`` with ``threads`` set where the options class has such a field."""
    if any(f.name == "threads" for f in dataclasses.fields(options)):
        return dataclasses.replace(options, threads=threads)
    return options


def _plan_of(up: Any, image: np.ndarray) -> Any | None:
    """The tile plan the Upscaler uses for ``image`` (whatever its tile policy), or None when
    this runtime's Upscaler no longer exposes it (the row then has no halo arithmetic)."""
    from runtime.image_io import read_image
    from runtime.tiling import plan_tiles

    array, info = read_image(image)
    with contextlib.suppress(AttributeError, TypeError):
        return up._prepare(array, info).plan  # exactly what upscale() plans
    if isinstance(up.tile, int) and isinstance(up.halo, int):
        limits = up.backend.window_limits()
        return plan_tiles(image.shape[0], image.shape[1], up.tile, up.halo, min_size=1 if limits is None else limits[0])
    _log(f"  note: cannot read the tile plan of {up!r}; its row has no window count")
    return None


def _upscaler_runner(kind: str, up: Any, image: np.ndarray, precision: str, extra: dict[str, Any]) -> Runner:
    plan = _plan_of(up, image)
    settings = {
        "backend": _options_record(up.options),
        "tile": up.tile,
        "halo": up.halo,
        "batch": up.batch,
        "tiles": len(plan) if plan is not None else None,
        "window": [plan.window_height, plan.window_width] if plan is not None else None,
        "border": getattr(plan, "border", 0) if plan is not None else 0,
        "repr": repr(up),
    }
    return Runner(
        kind,
        up.upscale,
        up.upscale,
        settings,
        len(plan) * plan.window_height * plan.window_width if plan is not None else None,
        precision,
        up.close,
        extra,
    )


def _default_runner(kind: str, model: str | None, spec: dict[str, Any], image: np.ndarray, threads: int) -> Runner:
    """``Upscaler()`` as a user gets it: only the model (None = bundled) and the threads given;
    backend "auto" and the tile policy are the runtime's defaults, read now and recorded."""
    from runtime import Upscaler
    from runtime.backends import resolve

    params = inspect.signature(Upscaler.__init__).parameters
    defaults = {k: repr(params[k].default) for k in ("backend", "tile", "halo", "batch") if k in params}
    path = Path(model) if model is not None else None
    kwargs: dict[str, Any] = {}
    if kind == "default-int8" and "precision" in params and spec["config"] == "compact":
        kwargs["precision"] = "int8"  # the user-facing switch, where the Upscaler has it
        model_arg = None
        from runtime.bundled import bundled_model

        path = bundled_model("int8")
    else:
        model_arg = model
    if path is None:
        from runtime.upscaler import default_model_path

        path = default_model_path()
    auto = params["backend"].default if "backend" in params else "auto"
    options = _with_threads(resolve(auto, path), threads)
    up = Upscaler(model_arg, backend=options, **kwargs)
    extra = {"signature_defaults": defaults, "resolved_from": auto, "model": str(path), "kwargs": kwargs}
    return _upscaler_runner(kind, up, image, "int8" if kind == "default-int8" else "fp32", extra)


def _fixed_runner(kind: str, model: str, options: Any, image: np.ndarray, tile: int | None) -> Runner:
    """An Upscaler on ``options``: ``tile`` with the model's halo, or (None) the whole image, halo 0."""
    from runtime import Upscaler

    height, width = image.shape[:2]
    if tile is None:
        with quiet_halo_warning():
            up = Upscaler(model, backend=options, tile=max(width, height), halo=0)
    else:
        up = Upscaler(model, backend=options, tile=tile)
    runner = _upscaler_runner(kind, up, image, "int8" if "int8" in kind else "fp32", {"model": model})
    if tile is not None:

        def seam_reference(img: np.ndarray) -> np.ndarray:
            # one window of the image plus the row's mirrored border: made after the timing
            with Upscaler(model, backend=options, tile=max(img.shape[:2]), halo=up.halo) as whole:
                return np.asarray(whole.upscale(img))

        runner.seam_reference = seam_reference
    return runner


def _torch_module(spec: dict[str, Any]) -> Any:
    from benchmarks.throughput_models import SCALE, build_config

    model, _, desc = build_config(spec["config"], spec["seed"])
    return model.path(SCALE).eval(), desc


def _torch_runner(kind: str, module: Any, image: np.ndarray, scale: int, tile: int, pad: int) -> Runner:
    import torch

    height, width = image.shape[:2]
    if kind == "torch-whole":

        def forward(x: Any) -> Any:
            return module(x)

        computed = height * width
        settings: dict[str, Any] = {"threads": torch.get_num_threads(), "tiler": None, "border": 0}
    else:

        def forward(x: Any) -> Any:
            return tile_process(module, x, scale, tile=tile, pad=pad)

        boxes = tile_boxes(height, width, tile, pad)
        computed = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1, _, _ in boxes)
        settings = {
            "threads": torch.get_num_threads(),
            "tiler": "Real-ESRGAN tile_process (benchmarks/naive_tiler.py)",
            "tile": tile,
            "pad": pad,
            "tiles": len(boxes),
            "border": 0,  # zero padding at the image edge, as Real-ESRGAN's tiler does
        }

    run_uint8 = torch_uint8_runner(forward)

    def run_float(img: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
            y = forward(x.contiguous())
            return y[0].permute(1, 2, 0).contiguous().numpy()

    return Runner(kind, run_uint8, run_float, settings, computed)


def _make_runner(
    kind: str, spec: dict[str, Any], image: np.ndarray, threads: int, module: Any
) -> tuple[Runner | None, str | None]:
    """(runner, None), or (None, why the row cannot run here)."""
    from runtime.backends import OnnxRuntime, OpenVino
    from runtime.errors import UpscaleError

    fp32, int8 = spec["onnx"], spec.get("int8_onnx")
    if kind in INT8_KINDS and not int8:
        return None, spec.get("int8_missing") or "no INT8 model"
    if kind.startswith("ov-") and spec.get("openvino_missing"):
        return None, spec["openvino_missing"]
    try:
        if kind in ("default", "default-int8"):
            model = spec.get("default_model") if kind == "default" else int8
            return _default_runner(kind, model, spec, image, threads), None
        if kind.startswith("ort-"):
            tile = None if kind.endswith("whole") else spec["tile"]
            return _fixed_runner(kind, fp32, OnnxRuntime(threads=threads), image, tile), None
        if kind.startswith("ov-"):
            tile = None if kind.endswith("whole") else spec["tile"]
            path = str(int8 if "int8" in kind else fp32)
            return _fixed_runner(kind, path, OpenVino(threads=threads), image, tile), None
        return _torch_runner(kind, module, image, spec["scale"], spec["naive_tile"], spec["naive_pad"]), None
    except UpscaleError as exc:  # e.g. the backend is not installed: the row says so
        return None, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- measuring


def _accuracy(out: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    from runtime.metrics import psnr

    out = np.asarray(out, dtype=np.float32)
    finite = bool(np.isfinite(out).all())
    value = psnr(out, ref) if finite else float("nan")
    return {
        "psnr_db": value,
        "max_abs_diff": float(np.max(np.abs(out.astype(np.float64) - ref))) if finite else float("nan"),
        "finite": finite,
    }


def _set_up(
    kind: str, spec: dict[str, Any], image: np.ndarray, image_desc: str, threads: int, module: Any
) -> tuple[Runner | None, dict[str, Any]]:
    """Make and warm up one row with its own peak-RSS mark: (runner, row), or (None, the row saying why not)."""
    height, width = image.shape[:2]
    row: dict[str, Any] = {
        "config": spec["config"],
        "threads": threads,
        "width": width,
        "height": height,
        "kind": kind,
        "image": image_desc,
    }
    label = f"[{spec['config']} t{threads} {width}x{height}] {kind}"
    rss_before = reset_peak_rss()
    t0 = time.perf_counter()
    runner, why = _make_runner(kind, spec, image, threads, module)
    if runner is None:
        _log(f"  {label}: not measured: {why}")
        return None, {**row, "status": "unavailable", "reason": why}
    for _ in range(spec["warmup"]):
        runner.run_uint8(image)
    setup_s = time.perf_counter() - t0
    peak = row_peak_rss_mib() if rss_before is not None else None
    row.update(
        {
            "status": "ok",
            "precision": runner.precision,
            "settings": runner.settings,
            "extra": runner.extra,
            "computed_px": runner.computed_px,
            "setup_and_warmup_s": setup_s,
            "peak_rss_mib": peak if peak is not None else peak_rss_mib(),
            "rss_before_mib": rss_before,
            "peak_rss_kind": "row (VmHWM after a clear_refs reset)" if peak is not None else "process (ru_maxrss)",
        }
    )
    if kind in ("default", "default-int8"):
        s = runner.settings
        _log(
            f"  {label} resolved to: {s['backend'].get('class')}(threads={s['backend'].get('threads')}) "
            f"tile={s['tile']} halo={s['halo']} batch={s['batch']} -> {s['tiles']} window(s) of "
            f"{'x'.join(map(str, (s['window'] or ['?', '?'])[::-1]))} "
            f"(Upscaler defaults: {runner.extra['signature_defaults']})"
        )
    _log(f"  {label}: set-up + warm-up {setup_s:.2f} s, peak RSS {row['peak_rss_mib']:.0f} MiB")
    return runner, row


class _Accuracy:
    """The float32 outputs a row is compared with: torch-whole's, given the same mirrored
    border context as the row (``settings["border"]``: the runtime's halo, 0 for whole rows
    and torch), and the seam reference (the row's backend in one window, or for the naive
    tiler torch-whole itself)."""

    def __init__(self, image: np.ndarray, scale: int) -> None:
        self.image_f = image.astype(np.float32)
        self.scale = scale
        self.torch_float: Callable[[np.ndarray], np.ndarray] | None = None
        self.refs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.wholes: dict[str, np.ndarray] = {}

    def _reference(self, border: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(float64, uint8) torch-whole output with ``border`` pixels of mirrored context."""
        from benchmarks.common import with_border

        if border not in self.refs and self.torch_float is not None:
            out = np.asarray(with_border(self.torch_float, border, self.scale)(self.image_f), np.float64)
            out = np.clip(out, 0.0, 255.0)  # the runtime clamps its float results to 0..255
            self.refs[border] = (out, np.rint(out).astype(np.uint8))
        return self.refs.get(border)

    def measure(self, kind: str, runner: Runner, row: dict[str, Any], last_u8: np.ndarray) -> None:
        # every row clamped to 0..255, as the runtime returns float results
        out = np.clip(np.asarray(runner.run_float(self.image_f), dtype=np.float32), 0.0, 255.0)
        if kind == "torch-whole":
            self.torch_float = runner.run_float
            self.refs[0] = (out.astype(np.float64), last_u8)
        ref = self._reference(int(runner.settings.get("border", 0)))
        row["accuracy_vs_torch"] = _accuracy(out, ref[0]) if ref is not None else None
        if kind in WHOLE_OF.values():
            self.wholes[kind] = out
        sibling = WHOLE_OF.get(kind)
        if runner.seam_reference is not None:
            row["accuracy_vs_whole"] = _accuracy(out, runner.seam_reference(self.image_f).astype(np.float64))
        elif sibling in self.wholes:
            row["accuracy_vs_whole"] = _accuracy(out, self.wholes[sibling].astype(np.float64))
        row["uint8_max_abs_diff_vs_torch"] = (
            int(np.max(np.abs(last_u8.astype(np.int16) - ref[1].astype(np.int16)))) if ref is not None else None
        )


def _report(label: str, row: dict[str, Any]) -> None:
    acc = row.get("accuracy_vs_torch") or {}
    _log(
        f"  {label} {row['kind']}: median {row['median_s'] * 1e3:.1f} ms, {row['output_mp_per_s']:.3f} MP/s out, "
        f"{acc.get('psnr_db', math.nan):.1f} dB vs torch"
    )


def _accuracy_order(kinds: Sequence[str]) -> list[str]:
    """torch-whole (the reference) first, then the whole-image rows, then the rows compared with them."""
    return sorted(kinds, key=lambda k: (k != "torch-whole", k in WHOLE_OF, ROW_KINDS.index(k)))


def measure_group(spec: dict[str, Any]) -> dict[str, Any]:
    """Every row kind of ``spec`` on every size of ``spec`` at ``spec["threads"]``.

    ``spec["order"]``: "round-robin" (all rows of a size set up, then timed in turns, then
    checked) or "blocks" (one row after the other, set up, timed, checked and closed: only
    one row's memory at a time)."""
    import torch

    threads = spec["threads"]
    torch.set_num_threads(threads)
    module, module_desc = _torch_module(spec)
    rows: list[dict[str, Any]] = []
    defaults_seen: dict[str, Any] = {}
    for width, height in spec["sizes"]:
        label = f"[{spec['config']} t{threads} {width}x{height}]"
        image, image_desc = load_image(spec, width, height)
        kinds = [k for k in spec["kinds"] if k not in spec.get("skip_rows", {}).get(f"{width}x{height}", ())]
        acc = _Accuracy(image, spec["scale"])
        done: dict[str, dict[str, Any]] = {}
        if spec.get("order", "round-robin") == "blocks":
            for kind in _accuracy_order(kinds):
                runner, row = _set_up(kind, spec, image, image_desc, threads, module)
                if runner is not None:
                    times, last = [], image
                    for _ in range(spec["repeats"]):
                        t0 = time.perf_counter()
                        last = runner.run_uint8(image)
                        times.append(time.perf_counter() - t0)
                    row.update(summarize(times, width, height, spec["scale"]))
                    acc.measure(kind, runner, row, last)
                    runner.close()
                    _report(label, row)
                done[kind] = row
        else:
            runners: dict[str, Runner] = {}
            for kind in kinds:  # 1. set-up and warm-up, each row with its own peak RSS
                runner, row = _set_up(kind, spec, image, image_desc, threads, module)
                done[kind] = row
                if runner is not None:
                    runners[kind] = runner
            times_of: dict[str, list[float]] = {k: [] for k in runners}
            last_of: dict[str, np.ndarray] = {}
            for _ in range(spec["repeats"]):  # 2. timed round robin
                for kind, runner in runners.items():
                    t0 = time.perf_counter()
                    last_of[kind] = runner.run_uint8(image)
                    times_of[kind].append(time.perf_counter() - t0)
            for kind in _accuracy_order(list(runners)):  # 3. accuracy
                row = done[kind]
                row.update(summarize(times_of[kind], width, height, spec["scale"]))
                acc.measure(kind, runners[kind], row, last_of[kind])
                _report(label, row)
            for runner in runners.values():
                runner.close()
        for kind in kinds:
            rows.append(done[kind])
            if kind in ("default", "default-int8") and done[kind]["status"] == "ok":
                defaults_seen[kind] = {"settings": done[kind]["settings"], **done[kind]["extra"]}
        del acc
    return {
        "rows": rows,
        "defaults": defaults_seen,
        "torch_module": module_desc,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(
            "usage: python -m benchmarks.peers_worker SPEC.json OUT.json (run by benchmarks/peers.py)", file=sys.stderr
        )
        return 2
    spec = json.loads(Path(args[0]).read_text())
    result = measure_group(spec)
    Path(args[1]).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
