#!/usr/bin/env bash
# One command for a GPU machine (see shared/GPU.md): the tests marked gpu, parity of the
# pipelined CUDA runtime against PyTorch float32, and throughput; full JSON in OUT_DIR,
# a short table printed last.
#
#   bash benchmarks/gpu_check.sh OUT_DIR            # full run (about 10 minutes on an H100)
#   bash benchmarks/gpu_check.sh OUT_DIR --quick    # smoke run (a couple of minutes)
#   bash benchmarks/gpu_check.sh OUT_DIR --quick --allow-dirty   # from a tree with uncommitted changes
#
# Needs: a CUDA build of torch, cuda-bindings (cuda-python), numpy, Pillow, safetensors,
# pytest; onnxruntime for the parity reference tooling (CPU build is enough). Nothing is
# downloaded. Every step runs even if an earlier one failed; the exit status is non-zero
# when any step failed. The benchmark steps refuse to write results from a git tree with
# uncommitted changes unless --allow-dirty is given (passed on to them; the results then
# record dirty: true). Environment: PYTHON (default python).
set -euo pipefail

usage() { echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--quick] [--allow-dirty]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 3 ]] || usage
OUT=$1
QUICK=0
DIRTY=()
for flag in "${@:2}"; do
    case $flag in
        --quick) QUICK=1 ;;
        --allow-dirty) DIRTY=(--allow-dirty) ;;
        *) usage ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
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
    set +e
    "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$STATUS_FILE"
    if [[ $rc -ne 0 ]]; then
        echo "!! step $name failed with exit status $rc (log: $OUT/$name.log)" >&2
    fi
}

# 0. Preflight: say clearly what is missing before spending GPU time.
log "preflight"
if ! "$PY" - <<'EOF'
import importlib, sys
missing = []
for module, hint in [("numpy", "numpy"), ("PIL", "Pillow"), ("torch", "torch (CUDA build)"),
                     ("safetensors", "safetensors"), ("pytest", "pytest"),
                     ("cuda.bindings.runtime", "cuda-bindings / cuda-python")]:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        missing.append(f"{hint} ({exc})")
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
then
    echo "gpu_check: cannot run on this machine (see the line above)" >&2
    exit 2
fi

# 1. Environment record: GPU, driver, CUDA, library versions, date, command.
"$PY" - "$OUT/environment.json" "$COMMAND" <<'EOF'
import json, subprocess, sys
from benchmarks.common import environment, package_version
from runtime.cuda.api import bindings_version
from runtime.cuda.resources import CudaDevice
import torch
env = environment()
env["command"] = sys.argv[2]
env["gpu"] = CudaDevice(0).describe()
env["gpu"].update(torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                  cuda_bindings=bindings_version(),
                  onnxruntime_gpu=package_version("onnxruntime-gpu"))
try:
    env["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
         "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
except (OSError, subprocess.SubprocessError) as exc:
    env["nvidia_smi"] = f"unavailable: {exc}"
json.dump(env, open(sys.argv[1], "w"), indent=2, default=str)
print(f"{env['gpu']['name']}, driver {env['gpu']['cuda_driver_version']}, CUDA runtime "
      f"{env['gpu']['cuda_runtime_version']}, torch {torch.__version__} (CUDA {torch.version.cuda})")
EOF

# 2. The tests marked gpu (the real CUDA pipeline with the PyTorch stage).
run_step gpu_tests "$PY" -m pytest -m gpu -rs -q -p no:cacheprovider tests/test_cuda_gpu.py \
    --junitxml "$OUT/gpu_tests.xml"

# 3. Parity: the pipelined runtime (torch-cuda stage) vs PyTorch float32, whole and tiled.
PHOTOS=data/photos/test
MAXSIZE=()
[[ $QUICK -eq 1 ]] && MAXSIZE=(--max-size 192)
run_step parity_fp32 "$PY" benchmarks/parity.py --backend torch-cuda --precision fp32 ${MAXSIZE[@]+"${MAXSIZE[@]}"} ${DIRTY[@]+"${DIRTY[@]}"} \
    --out "$OUT" --name parity_gpu_fp32 "$PHOTOS"
run_step parity_fp16 "$PY" benchmarks/parity.py --backend torch-cuda --fp16 --precision fp16 ${MAXSIZE[@]+"${MAXSIZE[@]}"} ${DIRTY[@]+"${DIRTY[@]}"} \
    --out "$OUT" --name parity_gpu_fp16 "$PHOTOS"
if "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
    run_step parity_ort_cuda "$PY" benchmarks/parity.py --backend onnxruntime-cuda --precision fp32 ${MAXSIZE[@]+"${MAXSIZE[@]}"} ${DIRTY[@]+"${DIRTY[@]}"} \
        --out "$OUT" --name parity_gpu_ort_cuda "$PHOTOS"
else
    log "parity_ort_cuda: skipped (onnxruntime has no CUDAExecutionProvider)"
fi

# 4. Throughput: PyTorch eager/graphs/compile vs the pipelined runtime.
QUICK_ARGS=()
[[ $QUICK -eq 1 ]] && QUICK_ARGS=(--quick)
run_step throughput "$PY" benchmarks/throughput_gpu.py ${QUICK_ARGS[@]+"${QUICK_ARGS[@]}"} ${DIRTY[@]+"${DIRTY[@]}"} \
    --out "$OUT" --name throughput_gpu

# 5. Summary JSON and the short table, last.
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
steps = [dict(zip(("step", "exit_status", "seconds"), line.split("\t")))
         for line in (out / "steps.tsv").read_text().splitlines() if line]
summary = {"environment": json.loads((out / "environment.json").read_text()), "steps": steps, "parity": {}, "throughput": []}
for name in ("parity_gpu_fp32", "parity_gpu_fp16", "parity_gpu_ort_cuda"):
    path = out / f"{name}.json"
    if path.is_file():
        data = json.loads(path.read_text())
        rows = data.get("rows", [])
        summary["parity"][name] = {"passed": data.get("passed"),
                                   "min_psnr": min((r["psnr"] for r in rows if r.get("psnr") is not None), default=None),
                                   "max_abs_err": max((r["max_abs_err"] for r in rows if r.get("max_abs_err") is not None), default=None)}
tp = out / "throughput_gpu.json"
if tp.is_file():
    summary["throughput"] = [r for r in json.loads(tp.read_text())["rows"] if "error" not in r]
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

gpu = summary["environment"]["gpu"]
print(f"\n# gpu_check on {gpu['name']} (driver {gpu['cuda_driver_version']}, CUDA {gpu['cuda_runtime_version']}), "
      f"{summary['environment']['date']}")
print("\n| step | exit | s |\n|---|---:|---:|")
for s in steps:
    print(f"| {s['step']} | {s['exit_status']} | {s['seconds']} |")
if summary["parity"]:
    print("\n| parity | pass | min PSNR dB | max abs err |\n|---|---|---:|---:|")
    for name, p in summary["parity"].items():
        psnr = "-" if p["min_psnr"] is None else f"{p['min_psnr']:.2f}"
        err = "-" if p["max_abs_err"] is None else f"{p['max_abs_err']:.4f}"
        print(f"| {name} | {p['passed']} | {psnr} | {err} |")
rows = summary["throughput"]
if rows:
    print("\n| config | size | mode | I/O | timing | p50 ms | MP/s out |\n|---|---|---|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['size']} | {r['mode']} | {r['io']} | {r['timing']} | {r['p50_ms']:.2f} | {r['output_mp_per_s']:.1f} |")
print(f"\nfull results: {out}/gpu_check.json and the step logs beside it")
EOF

if awk -F'\t' '$2 != 0 { bad = 1 } END { exit !bad }' "$STATUS_FILE"; then
    echo "gpu_check: some steps failed (see $STATUS_FILE)" >&2
    exit 1
fi
