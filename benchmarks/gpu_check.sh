#!/usr/bin/env bash
# One command for a GPU machine (see shared/GPU.md): the tests marked gpu, parity of the
# pipelined CUDA runtime against PyTorch float32, and throughput; full JSON in OUT_DIR,
# a short table printed last.
#
#   bash benchmarks/gpu_check.sh OUT_DIR            # full run (about 10 minutes on an H100)
#   bash benchmarks/gpu_check.sh OUT_DIR --quick    # smoke run (a couple of minutes)
#   bash benchmarks/gpu_check.sh OUT_DIR --quick --allow-dirty   # from a tree with uncommitted changes
#
# Flags: --quick (small sizes, few repeats), --allow-dirty (passed on to the benchmarks,
# which otherwise refuse to write results from a git tree with uncommitted changes; the
# results then record dirty: true), --allow-tf32 (passed on: the float32 GPU runs may use
# TF32; off by default, recorded), --keep-going (run every step even when the preflight
# failed, to see how far a half-working machine gets).
#
# Needs: a CUDA build of torch, cuda-bindings (cuda-python), numpy, Pillow, safetensors,
# pytest; onnxruntime for the parity reference tooling (CPU build is enough). Runs on a
# bare GPU box without internet: nothing is downloaded or installed, the repository is
# used from its checkout (PYTHONPATH), and when the project is not pip-installed the
# preflight writes its checkpoint-loader entry point into a temporary folder on the path.
#
# Results, also when a step fails: OUT_DIR/steps.tsv (step, exit status or "skipped",
# seconds, note), one log per step, OUT_DIR/gpu_check.json and OUT_DIR/summary.md (every
# step's exit status, then the parity and throughput tables that exist). Every step runs
# even if an earlier one failed; after a failed preflight the GPU steps are skipped
# (recorded) unless --keep-going. Exit status: 0 all steps passed, 1 a step failed,
# 2 the preflight failed. Environment: PYTHON (default python3).
set -uo pipefail

usage() {
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--quick] [--allow-dirty] [--allow-tf32] [--keep-going]" >&2
    exit 2
}
[[ $# -ge 1 ]] || usage
OUT=$1
QUICK=0
KEEP_GOING=0
PASS_ON=()
for flag in "${@:2}"; do
    case $flag in
        --quick) QUICK=1 ;;
        --allow-dirty | --allow-tf32) PASS_ON+=("$flag") ;;
        --keep-going) KEEP_GOING=1 ;;
        *) usage ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
META=$(mktemp -d)
trap 'rm -rf "$META"' EXIT
export PYTHONPATH="$ROOT:$META${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
COMMAND="bash benchmarks/gpu_check.sh $*"
STATUS_FILE="$OUT/steps.tsv"
: > "$STATUS_FILE"

log() { printf '\n== %s\n' "$*" >&2; }

# run_step NAME CMD...: run, tee the output to OUT/NAME.log, record the exit status.
run_step() {
    local name=$1
    shift
    log "$name: $*"
    local start rc
    start=$(date +%s)
    "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" "" >> "$STATUS_FILE"
    if [[ $rc -ne 0 ]]; then
        echo "!! step $name failed with exit status $rc (log: $OUT/$name.log)" >&2
    fi
    return 0
}

# skip_step NAME WHY: record a step that did not run.
skip_step() {
    log "$1: skipped ($2)"
    printf '%s\tskipped\t0\t%s\n' "$1" "$2" >> "$STATUS_FILE"
}

# gpu_step NAME CMD...: a step that needs the GPU: skipped after a failed preflight.
PREFLIGHT_OK=1
gpu_step() {
    if [[ $PREFLIGHT_OK -eq 1 || $KEEP_GOING -eq 1 ]]; then
        run_step "$@"
    else
        skip_step "$1" "the preflight failed"
    fi
}

# 0. Preflight: say clearly what is missing before spending GPU time.
run_step preflight "$PY" - "$META" <<'EOF'
import importlib, sys
from importlib import metadata
from pathlib import Path
missing = []
for module, hint in [("numpy", "numpy"), ("PIL", "Pillow"), ("torch", "torch (CUDA build)"),
                     ("safetensors", "safetensors"), ("pytest", "pytest"),
                     ("cuda.bindings.runtime", "cuda-bindings / cuda-python")]:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        missing.append(f"{hint} ({exc})")
# backend torch-cuda finds the checkpoint loader through an entry point: without a pip
# install of the project, give it one (a dist-info folder on PYTHONPATH, from pyproject.toml)
group = "fourpp_eusr.model_loaders"
if not any(e.name == "safetensors" for e in metadata.entry_points(group=group)):
    import tomllib
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    info = Path(sys.argv[1]) / "fourpp_eusr-0+checkout.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: 0+checkout\n")
    entries = project["entry-points"][group]
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    found = [e.value for e in metadata.entry_points(group=group) if e.name == "safetensors"]
    print(f"preflight: the project is not installed; {group} entry point from pyproject.toml: {found}")
if missing:
    sys.exit("missing Python packages: " + "; ".join(missing))
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA GPU (CUDA build: {torch.version.cuda})")
from runtime.cuda.resources import cuda_available
ok, why = cuda_available()
if not ok:
    sys.exit(f"cuda-python cannot reach the GPU: {why}")
print("preflight ok:", why)
EOF
if [[ $(tail -n 1 "$STATUS_FILE" | cut -f 2) != 0 ]]; then
    PREFLIGHT_OK=0
    echo "gpu_check: the preflight failed (see above); GPU steps are $([[ $KEEP_GOING -eq 1 ]] && echo 'run anyway (--keep-going)' || echo skipped)" >&2
fi

# 1. Environment record: GPU, driver, CUDA, library versions, date, command (what is
#    unavailable is recorded as an error, the file is written in any case).
run_step environment "$PY" - "$OUT/environment.json" "$COMMAND" <<'EOF'
import json, subprocess, sys
from benchmarks.common import environment, package_version
env = environment()
env["command"] = sys.argv[2]
try:
    import torch
    from runtime.cuda.api import bindings_version
    from runtime.cuda.resources import CudaDevice
    env["gpu"] = CudaDevice(0).describe()
    env["gpu"].update(torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                      cuda_bindings=bindings_version(),
                      onnxruntime_gpu=package_version("onnxruntime-gpu"))
except Exception as exc:  # no GPU, no torch, no cuda-python: say so in the record
    env["gpu"] = {"error": f"{type(exc).__name__}: {exc}"}
try:
    env["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
         "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
except (OSError, subprocess.SubprocessError) as exc:
    env["nvidia_smi"] = f"unavailable: {exc}"
with open(sys.argv[1], "w") as f:
    json.dump(env, f, indent=2, default=str)
gpu = env["gpu"]
print(gpu.get("error") or f"{gpu['name']}, driver {gpu['cuda_driver_version']}, CUDA runtime "
      f"{gpu['cuda_runtime_version']}, torch CUDA {gpu['torch_cuda']}")
sys.exit(1 if "error" in gpu else 0)
EOF

# 2. The tests marked gpu (the real CUDA pipeline with the PyTorch stage); required here:
#    FOURPP_TEST_DEVICE=cuda turns a GPU the tests cannot use into failures, not skips.
gpu_step gpu_tests env FOURPP_TEST_DEVICE=cuda "$PY" -m pytest -m gpu -rs -q -p no:cacheprovider \
    tests/test_cuda_gpu.py --junitxml "$OUT/gpu_tests.xml"

# 3. Parity: the pipelined runtime (torch-cuda stage) vs PyTorch float32, whole and tiled.
PHOTOS=data/photos/test
MAXSIZE=()
[[ $QUICK -eq 1 ]] && MAXSIZE=(--max-size 192)
PARITY=(benchmarks/parity.py ${MAXSIZE[@]+"${MAXSIZE[@]}"} ${PASS_ON[@]+"${PASS_ON[@]}"} --out "$OUT")
gpu_step parity_fp32 "$PY" "${PARITY[@]}" --backend torch-cuda --precision fp32 --name parity_gpu_fp32 "$PHOTOS"
gpu_step parity_fp16 "$PY" "${PARITY[@]}" --backend torch-cuda --fp16 --precision fp16 --name parity_gpu_fp16 "$PHOTOS"
if "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
    gpu_step parity_ort_cuda "$PY" "${PARITY[@]}" --backend onnxruntime-cuda --precision fp32 \
        --name parity_gpu_ort_cuda "$PHOTOS"
else
    skip_step parity_ort_cuda "onnxruntime has no CUDAExecutionProvider"
fi

# 4. Throughput: PyTorch eager/graphs/compile vs the pipelined runtime.
QUICK_ARGS=()
[[ $QUICK -eq 1 ]] && QUICK_ARGS=(--quick)
gpu_step throughput "$PY" benchmarks/throughput_gpu.py ${QUICK_ARGS[@]+"${QUICK_ARGS[@]}"} \
    ${PASS_ON[@]+"${PASS_ON[@]}"} --out "$OUT" --name throughput_gpu

# 5. Triton: the tensorrt_plan model export/to_triton.py generates, loaded by a real Triton
#    (NVIDIA's container has the TensorRT backend) and compared with ONNX Runtime CPU.
if TRITON_WHY=$("$PY" benchmarks/triton_check.py --probe 2>&1); then
    gpu_step triton_tensorrt "$PY" benchmarks/triton_check.py ${PASS_ON[@]+"${PASS_ON[@]}"} --out "$OUT"
else
    skip_step triton_tensorrt "$(printf '%s' "$TRITON_WHY" | tail -n 1 | tr '\t\n' '  ')"
fi

# 6. gpu_check.json and the parity/throughput tables (from whatever results exist).
run_step summary "$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
steps = [dict(zip(("step", "exit_status", "seconds", "note"), line.split("\t")))
         for line in (out / "steps.tsv").read_text().splitlines() if line]
env_file = out / "environment.json"
environment = json.loads(env_file.read_text()) if env_file.is_file() else {"error": "environment.json is missing"}
summary = {"environment": environment, "steps": steps, "parity": {}, "throughput": []}
for name in ("parity_gpu_fp32", "parity_gpu_fp16", "parity_gpu_ort_cuda"):
    path = out / f"{name}.json"
    if path.is_file():
        data = json.loads(path.read_text())
        rows = data.get("rows", [])
        summary["parity"][name] = {"passed": data.get("passed"), "allow_tf32": data.get("allow_tf32"),
                                   "min_psnr": min((r["psnr"] for r in rows if isinstance(r.get("psnr"), float)), default=None),
                                   "max_abs_err": max((r["max_abs_err"] for r in rows if r.get("max_abs_err") is not None), default=None)}
tp = out / "throughput_gpu.json"
if tp.is_file():
    summary["throughput"] = [r for r in json.loads(tp.read_text())["rows"] if "error" not in r]
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
gpu = environment.get("gpu") or {}
lines = ["", f"GPU: {gpu['name']} (driver {gpu.get('cuda_driver_version')}, CUDA runtime {gpu.get('cuda_runtime_version')})"
         if "name" in gpu else f"GPU: unavailable ({gpu.get('error') or environment.get('error')})"]
if summary["parity"]:
    lines += ["", "| parity | pass | TF32 | min PSNR dB | max abs err |", "|---|---|---|---:|---:|"]
    for name, p in summary["parity"].items():
        psnr = "-" if p["min_psnr"] is None else f"{p['min_psnr']:.2f}"
        err = "-" if p["max_abs_err"] is None else f"{p['max_abs_err']:.4f}"
        lines.append(f"| {name} | {p['passed']} | {p['allow_tf32']} | {psnr} | {err} |")
if summary["throughput"]:
    lines += ["", "| config | size | mode | I/O | timing | p50 ms | MP/s out |", "|---|---|---|---|---|---:|---:|"]
    for r in summary["throughput"]:
        lines.append(f"| {r['config']} | {r['size']} | {r['mode']} | {r['io']} | {r['timing']} | "
                     f"{r['p50_ms']:.2f} | {r['output_mp_per_s']:.1f} |")
(out / "summary_tables.md").write_text("\n".join(lines) + "\n")
EOF

# The short table, last: written by the shell itself, so it exists whatever failed above.
{
    printf '# gpu_check, %s\n\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'Command: `%s`\n\n| step | exit | s | note |\n|---|---:|---:|---|\n' "$COMMAND"
    awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$STATUS_FILE"
    [[ -f "$OUT/summary_tables.md" ]] && cat "$OUT/summary_tables.md"
    printf '\nfull results: %s/gpu_check.json and the step logs beside it\n' "$OUT"
} > "$OUT/summary.md"
rm -f "$OUT/summary_tables.md"
echo
cat "$OUT/summary.md"

if [[ $PREFLIGHT_OK -eq 0 ]]; then
    echo "gpu_check: the preflight failed (see $OUT/preflight.log)" >&2
    exit 2
fi
if awk -F'\t' '$2 != "0" && $2 != "skipped" { bad = 1 } END { exit !bad }' "$STATUS_FILE"; then
    echo "gpu_check: some steps failed (see $STATUS_FILE)" >&2
    exit 1
fi
