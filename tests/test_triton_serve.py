"""A real Triton Inference Server on a generated model repository: configs, pixels, bad requests.

The server is the ``tritonserver`` binary of nvidia-pytriton unpacked by
``tests/triton_kit/install.py`` (CPU, Python backend only; no mock), started once per module
on loopback with free ports and always stopped in the fixture's ``finally``. The tests that
need a server are marked slow (its start-up counts); the config tests are not. Each config the
generator writes is parsed with Triton's own ``ModelConfig`` protobuf schema (tritonclient).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.to_triton import (
    OnnxModel,
    TensorRTModel,
    TritonRepositoryError,
    UpscaleModel,
    validate_config,
    write_repository,
)
from runtime import OnnxRuntime, Upscaler
from runtime.bundled import bundled_model
from runtime.serve import TritonServer, TritonServerError
from runtime.triton_client import TritonClientError, UpscaleClient, upscale

REPO = Path(__file__).resolve().parents[1]
MAX_PIXELS = 64 * 64


def _kit():
    spec = importlib.util.spec_from_file_location("triton_kit_install", REPO / "tests" / "triton_kit" / "install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def triton_home() -> Path:
    """The kit's Triton home, installed now if missing (seconds when cached, as in .ci/run)."""
    return _kit().install_server()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton_repo")
    write_repository(root, upscale=UpscaleModel(threads=1, max_pixels=MAX_PIXELS), onnx_model=OnnxModel())
    return root


@pytest.fixture(scope="module")
def server(repository: Path, triton_home: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("triton_log") / "server.log"
    s = TritonServer(repository, triton_home=triton_home, log=log)
    try:
        s.start(timeout=180)
        yield s
    finally:
        s.close(timeout=30)


@pytest.fixture(scope="module")
def local() -> Upscaler:
    with Upscaler(bundled_model(), backend=OnnxRuntime(threads=1)) as up:
        yield up


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(17)
    photo = np.asarray(Image.open(REPO / "runtime" / "assets" / "demo.png").convert("RGB"))
    return {
        "rgb": np.ascontiguousarray(photo[40:60, 50:74]),  # 20x24 real photo crop
        "gray2d": rng.integers(0, 256, (13, 17), dtype=np.uint8),
        "gray_alpha": rng.integers(0, 256, (9, 11, 2), dtype=np.uint8),
        "rgba": np.dstack([photo[:16, :16], rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)]),
        "tiny": photo[:1, :1].copy(),
    }


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- generated configs


def test_every_generated_config_parses_with_tritons_schema(repository: Path) -> None:
    up = validate_config((repository / "upscale" / "config.pbtxt").read_text())
    assert up.backend == "python" and up.max_batch_size == 0
    assert [(i.name, list(i.dims), i.optional) for i in up.input] == [
        ("IMAGE", [-1, -1, -1], True),
        ("IMAGE_BYTES", [1], True),
    ]
    assert up.parameters["max_pixels"].string_value == str(MAX_PIXELS)
    assert (repository / "upscale" / "1" / "model.py").is_file()
    assert (repository / "upscale" / "1" / "model.onnx").read_bytes() == bundled_model().read_bytes()

    onnx = validate_config((repository / "eusr_onnx" / "config.pbtxt").read_text())
    assert onnx.platform == "onnxruntime_onnx" and onnx.max_batch_size == 8
    # From the graph (float32 NCHW, dynamic batch/H/W), not typed: batch axis dropped, -1 for H/W.
    assert [(t.name, list(t.dims)) for t in onnx.input] == [("lr", [3, -1, -1])]
    assert [(t.name, list(t.dims)) for t in onnx.output] == [("sr", [3, -1, -1])]
    from tritonclient.grpc import model_config_pb2 as mc

    assert [mc.DataType.Name(t.data_type) for t in (*onnx.input, *onnx.output)] == ["TYPE_FP32", "TYPE_FP32"]
    assert list(onnx.dynamic_batching.preferred_batch_size) == [8]


@pytest.mark.parametrize("metadata", [True, False])
def test_onnx_config_follows_a_uint8_nhwc_graph(tmp_path: Path, metadata: bool) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    from tests.trt_kit.onnx_models import write_onnx

    onnx = write_onnx(tmp_path / "u8.onnx", io="uint8-nhwc", metadata=metadata)
    if not metadata:  # dynamic shapes and no metadata: the scale is unknown, said with the file's name
        with pytest.raises(TritonRepositoryError, match=r"u8\.onnx: lacks 'fourpp_eusr' metadata .*scale is unknown"):
            write_repository(tmp_path / "r", onnx=onnx)
        return
    written = write_repository(tmp_path / "r", onnx=onnx, onnx_model=OnnxModel(max_batch_size=4))
    config = validate_config((written["eusr_onnx"] / "config.pbtxt").read_text())
    assert [(t.name, list(t.dims), mc.DataType.Name(t.data_type)) for t in (*config.input, *config.output)] == [
        ("lr", [-1, -1, 3], "TYPE_UINT8"),
        ("sr", [-1, -1, 3], "TYPE_UINT8"),
    ]
    upscale_params = validate_config((written["upscale"] / "config.pbtxt").read_text()).parameters
    assert upscale_params["model_io"].string_value == "uint8-nhwc" and upscale_params["scale"].string_value == "4"


def test_validate_config_names_a_bad_field() -> None:
    with pytest.raises(TritonRepositoryError, match=r"bad\.pbtxt: not a valid Triton ModelConfig.*max_batch"):
        validate_config('name: "x"\nmax_batchsize: 4\n', name="bad.pbtxt")


def _sidecar(io: str) -> dict:
    if io == "uint8-nhwc":
        shape_in, shape_out, dtype = [-1, -1, -1, 3], [-1, -1, -1, 3], "UINT8"
        prof = {"min": [1, 16, 16, 3], "opt": [4, 144, 144, 3], "max": [16, 144, 144, 3]}
    else:
        shape_in, shape_out, dtype = [-1, 3, -1, -1], [-1, 3, -1, -1], "FLOAT"
        prof = {"min": [1, 3, 16, 16], "opt": [8, 3, 144, 144], "max": [8, 3, 144, 144]}
    return {
        "format": 1,
        "tensorrt_version": "10.16.1.11",
        "model": {"io": io, "scale": 4, "input": "lr", "output": "sr"},
        "profiles": [{"input": "lr", **prof}, {"input": "lr", **prof}],
        "io_tensors": [
            {"name": "lr", "mode": "input", "dtype": dtype, "shape": shape_in, "format": "LINEAR"},
            {"name": "sr", "mode": "output", "dtype": dtype, "shape": shape_out, "format": "LINEAR"},
        ],
        "engine_sha256": "0" * 64,
    }


@pytest.mark.parametrize(
    ("io", "dims", "dtype", "max_batch", "preferred"),
    [
        ("uint8-nhwc", [-1, -1, 3], "TYPE_UINT8", 16, [4, 16]),
        ("float32-nchw", [3, -1, -1], "TYPE_FP32", 8, [8]),
    ],
)
def test_tensorrt_config_comes_from_the_engine_sidecar(tmp_path: Path, io, dims, dtype, max_batch, preferred) -> None:
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"not a real plan: TensorRT cannot load here")
    (tmp_path / "m.plan.json").write_text(json.dumps(_sidecar(io)))
    written = write_repository(
        tmp_path / "repo", engine=engine, upscale=None, onnx_model=None, tensorrt_model=TensorRTModel(instances=2)
    )
    assert set(written) == {"eusr_tensorrt"}
    config = validate_config((written["eusr_tensorrt"] / "config.pbtxt").read_text())
    from tritonclient.grpc import model_config_pb2 as mc

    assert config.platform == "tensorrt_plan" and config.max_batch_size == max_batch
    assert [list(t.dims) for t in (*config.input, *config.output)] == [dims, dims]
    assert [mc.DataType.Name(t.data_type) for t in (*config.input, *config.output)] == [dtype, dtype]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU and config.instance_group[0].count == 2
    assert list(config.dynamic_batching.preferred_batch_size) == preferred
    assert (written["eusr_tensorrt"] / "1" / "model.plan").read_bytes() == engine.read_bytes()


def test_upscale_model_on_tensorrt_carries_the_engine_and_gpu_instances(tmp_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    engine = tmp_path / "m.plan"
    engine.write_bytes(b"plan bytes")
    (tmp_path / "m.plan.json").write_text(json.dumps(_sidecar("uint8-nhwc")))
    written = write_repository(
        tmp_path / "repo", engine=engine, upscale=UpscaleModel(backend="tensorrt", instances=2), onnx_model=None
    )
    assert set(written) == {"upscale", "eusr_tensorrt"}
    config = validate_config((written["upscale"] / "config.pbtxt").read_text())
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU and config.instance_group[0].count == 2
    assert config.parameters["backend"].string_value == "tensorrt"
    assert config.parameters["model_file"].string_value == "model.plan"
    version = written["upscale"] / "1"
    assert (version / "model.plan").read_bytes() == b"plan bytes" and (version / "model.plan.json").is_file()


def test_repository_refuses_bad_input_by_name(tmp_path: Path) -> None:
    with pytest.raises(TritonRepositoryError, match=r"--engine .*nope\.plan: no such file"):
        write_repository(tmp_path / "r", engine=tmp_path / "nope.plan")
    with pytest.raises(TritonRepositoryError, match="--upscale-backend tensorrt needs --engine"):
        write_repository(tmp_path / "r", upscale=UpscaleModel(backend="tensorrt"))
    with pytest.raises(TritonRepositoryError, match="--upscale-backend 'cuda'"):
        UpscaleModel(backend="cuda")
    with pytest.raises(TritonRepositoryError, match="--onnx-tensorrt-accelerator needs --onnx-kind gpu"):
        OnnxModel(tensorrt_accelerator=True)
    write_repository(tmp_path / "r", onnx_model=None)
    with pytest.raises(TritonRepositoryError, match=r"model folders \['upscale'\] exist already; pass --overwrite"):
        write_repository(tmp_path / "r", onnx_model=None)
    write_repository(tmp_path / "r", onnx_model=None, overwrite=True)


def test_onnx_gpu_config_with_the_tensorrt_accelerator(tmp_path: Path) -> None:
    written = write_repository(
        tmp_path, upscale=None, onnx_model=OnnxModel(kind="gpu", tensorrt_accelerator=True, instances=3)
    )
    config = validate_config((written["eusr_onnx"] / "config.pbtxt").read_text())
    accel = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
    assert config.instance_group[0].count == 3


# --------------------------------------------------------------------------- the real server


@pytest.mark.slow  # the module's server starts in ~4 s
def test_models_load_and_the_onnx_model_says_why_not(server: TritonServer) -> None:
    states = {m["name"]: m for m in server.model_states()}
    assert states["upscale"]["state"] == "READY"
    # The bundled server has only the Python backend: the ONNX model is reported, not fatal.
    onnx = states["eusr_onnx"]
    assert onnx["state"] == "READY" or "onnxruntime" in onnx.get("reason", ""), onnx


@pytest.mark.slow  # the module's server starts in ~4 s
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_responses_equal_the_local_upscaler_pixel_for_pixel(
    server: TritonServer, local: Upscaler, protocol: str
) -> None:
    url = server.http_url if protocol == "http" else f"grpc://{server.grpc_url}"
    with UpscaleClient(url) as client:
        for name, image in _images().items():
            got = client.upscale(image)
            want = local.upscale(image)
            assert got.dtype == np.uint8 and got.shape == want.shape, name
            assert np.array_equal(got, want), f"{name}: {np.count_nonzero(got != want)} pixels differ"
        photo = _images()["rgb"]
        want = local.upscale(photo)
        assert np.array_equal(client.upscale(_png(photo)), want)  # encoded bytes, decoded server-side
        assert np.array_equal(client.upscale(Image.fromarray(photo)), want)
    assert np.array_equal(upscale(url, photo), want)  # the one-call helper


def _raw(client: UpscaleClient, name: str, array: np.ndarray, datatype: str) -> None:
    tensor = client._tc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    client.infer([tensor])


@pytest.mark.slow  # the module's server starts in ~4 s
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    server: TritonServer, local: Upscaler, protocol: str
) -> None:
    url = server.http_url if protocol == "http" else f"grpc://{server.grpc_url}"
    photo = _images()["rgb"]
    want = local.upscale(photo)
    corrupt = bytearray(_png(photo))
    corrupt[60:] = b"\0" * (len(corrupt) - 60)
    cases = [
        (
            "wrong dtype",
            lambda c: _raw(c, "IMAGE", photo.astype(np.float32), "FP32"),
            r"'IMAGE' data-type is 'FP32', but model 'upscale' expects 'UINT8'",
        ),
        (
            "wrong rank",
            lambda c: _raw(c, "IMAGE", photo[:, :, 0].copy(), "UINT8"),
            r"unexpected shape for input 'IMAGE'.*Expected \[-1,-1,-1\], got \[20,24\]",
        ),
        (
            "0x0",
            lambda c: _raw(c, "IMAGE", np.zeros((0, 0, 3), np.uint8), "UINT8"),
            r"IMAGE is 0x0 pixels; expected at least 1x1",
        ),
        (
            "5 channels",
            lambda c: _raw(c, "IMAGE", np.zeros((4, 4, 5), np.uint8), "UINT8"),
            r"5 channels; expected HxWxC with C in 1\.\.4",
        ),
        (
            "too large",
            lambda c: c.upscale(np.zeros((65, 64, 3), np.uint8)),
            rf"65x64 = 4160 pixels, over this model's limit of {MAX_PIXELS} \(parameter max_pixels",
        ),
        (
            "too large PNG",
            lambda c: c.upscale(_png(np.zeros((80, 80), np.uint8))),
            r"IMAGE_BYTES is 80x80 = 6400 pixels, over",
        ),
        ("corrupt PNG", lambda c: c.upscale(bytes(corrupt)), r"IMAGE_BYTES: .*(corrupt|truncated|broken|decode)"),
        (
            "not an image",
            lambda c: c.upscale(b"hello, world"),
            r"IMAGE_BYTES: 12 bytes starting b'hello, w' are no image format",
        ),
        ("no input", lambda c: c.infer([]), r"send exactly one of IMAGE .* or IMAGE_BYTES .*got neither"),
    ]
    with UpscaleClient(url) as client:
        for what, send, message in cases:
            with pytest.raises(TritonClientError, match=message):
                send(client)
            assert np.array_equal(client.upscale(photo), want), f"after {what}"
    with pytest.raises(TritonClientError, match=r"model 'missing'.*Request for unknown model: 'missing' is not found"):
        upscale(url, photo, model="missing")
    assert np.array_equal(upscale(url, photo), want)


@pytest.mark.slow  # the module's server starts in ~4 s
def test_client_refuses_bad_arguments_before_sending(server: TritonServer) -> None:
    from runtime.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="dtype must be uint8 for the upscale model, got uint16"):
        upscale(server.http_url, np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(InvalidArgumentError, match=r"url 'ftp://x:1': expected host:port"):
        UpscaleClient("ftp://x:1")
    with pytest.raises(InvalidArgumentError, match=r"nope\.png.*cannot read the file"):
        upscale(server.http_url, "nope.png")


@pytest.mark.slow  # the module's server starts in ~4 s
def test_concurrent_clients_all_get_correct_images(server: TritonServer, local: Upscaler) -> None:
    from benchmarks.serve import crops, run_load

    images = crops([(24, 16), (16, 20), (33, 9)])
    references = [local.upscale(im) for im in images]
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        run = run_load(url, protocol=protocol, images=images, references=references, clients=4, requests=2)
        assert run["errors"] == 0, run["error_messages"]
        assert run["responses"] == 8 and run["latency_p99_s"] >= run["latency_p50_s"] > 0


# --------------------------------------------------------------------------- start and stop


def test_server_start_errors_name_the_problem(tmp_path: Path, triton_home: Path) -> None:
    with pytest.raises(TritonServerError, match=r"--model-repository .*nope: no such folder"):
        TritonServer(tmp_path / "nope", triton_home=triton_home)
    with pytest.raises(TritonServerError, match=r"--triton-home .*: expected a folder with bin/tritonserver"):
        TritonServer(tmp_path, triton_home=tmp_path)


def _no_process_left(marker: str) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return marker not in out


@pytest.mark.slow  # the module's server starts in ~4 s
def test_serve_command_prints_endpoints_and_ctrl_c_stops_cleanly(
    repository: Path, triton_home: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "only_upscale"
    write_repository(repo, upscale=UpscaleModel(threads=1), onnx_model=None)
    # the documented form, `python -m runtime serve` (the CLI's subcommand, not runtime.serve's own main)
    cmd = [sys.executable, "-m", "runtime", "serve", "--model-repository", str(repo)]
    cmd += ["--triton-home", str(triton_home)]
    cmd += ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--log", str(tmp_path / "serve.log")]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        # SIGINT back to default: a test run started in the background (`cmd &`, nohup) has it
        # ignored, children inherit that, and Python then installs no KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C stops"):
                break
        text = "".join(lines)
        assert "Ctrl-C stops the server." in text, text + (
            proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
        )
        http = next(line.split()[1] for line in lines if line.strip().startswith("HTTP"))
        assert (
            "model upscale v1: READY" in text and "gRPC     127.0.0.1:" in text and "metrics  http://127.0.0.1:" in text
        )
        image = _images()["tiny"]
        assert upscale(http, image).shape == (4, 4, 3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0  # bounded by serve's stop timeout (30 s) + kill; slow when loaded
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert _no_process_left(str(repo.resolve())), "a tritonserver or stub process outlived serve"


# --------------------------------------------------------------------------- gpu_check's Triton step


def test_triton_check_probe_says_why_it_cannot_run_here(triton_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.triton_check import main, probe

    why = probe(str(triton_home))
    assert why is not None and f"the Triton at {triton_home} has no TensorRT backend" in why
    assert main(["--probe", "--triton-home", str(triton_home)]) == 1
    assert "has no TensorRT backend" in capsys.readouterr().out


@pytest.mark.slow  # the module's server starts in ~4 s
def test_triton_check_reports_tritons_reason_for_a_model_that_did_not_load(server: TritonServer) -> None:
    from benchmarks.common import BenchmarkError
    from benchmarks.triton_check import require_ready

    states = server.model_states()
    require_ready(states, "upscale")
    if {m["name"]: m for m in states}["eusr_onnx"]["state"] != "READY":
        with pytest.raises(BenchmarkError, match=r"could not load 'eusr_onnx': UNAVAILABLE: .*onnxruntime"):
            require_ready(states, "eusr_onnx")
    with pytest.raises(BenchmarkError, match=r"did not list model 'eusr_tensorrt'"):
        require_ready(states, "eusr_tensorrt")


@pytest.mark.parametrize("io", ["uint8-nhwc", "float32-nchw"])
def test_triton_check_batch_has_the_profiles_opt_shape(io: str) -> None:
    from benchmarks.triton_check import window_batch

    sidecar = _sidecar(io)
    batch, layout = window_batch(sidecar)
    assert list(batch.shape) == sidecar["profiles"][0]["opt"] and layout.value == io
    assert batch.dtype == (np.uint8 if io == "uint8-nhwc" else np.float32) and batch.std() > 1  # photo content
