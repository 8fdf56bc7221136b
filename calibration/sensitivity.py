"""Per-layer sensitivity: the PSNR vs float32 when only one layer keeps its Q/DQ.

Chooses which layers to leave in high precision (``quantize --keep-fp``): those whose
quantization alone costs the most. One calibration, then one graph per layer with every
other layer's Q/DQ pairs bypassed, so the scales are exactly those of the full model.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np

from runtime.imresize import imresize
from runtime.metrics import psnr

from .collect import list_images, load_rgb, read_model_info
from .gate import _run, _session

__all__ = ["qdq_groups", "only_layer", "sensitivity"]


def qdq_groups(model) -> dict[str, list[str]]:  # noqa: ANN001 - onnx.ModelProto
    """Quantized node name → the DequantizeLinear nodes (fed by a QuantizeLinear) it reads."""
    producer = {o: n for n in model.graph.node for o in n.output}
    groups: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i in n.input:
            dq = producer.get(i)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    groups.setdefault(n.name, []).append(dq.name)
    return groups


def only_layer(model, keep: str):  # noqa: ANN001, ANN201 - onnx.ModelProto in and out
    """A copy of ``model`` with every Q/DQ pair bypassed except those feeding node ``keep``."""
    m = copy.deepcopy(model)
    groups = qdq_groups(m)
    mine = set(groups.get(keep, []))
    nodes = {n.name: n for n in m.graph.node}
    producer = {o: n for n in m.graph.node for o in n.output}
    # A pair shared with ``keep`` stays for ``keep`` and is bypassed for the other readers.
    rename = {nodes[dq].output[0]: producer[nodes[dq].input[0]].input[0]
              for name, dqs in groups.items() if name != keep for dq in dqs}
    for n in m.graph.node:
        if n.name == keep or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    # Drop Q/DQ nodes nobody reads any more (twice: DQ first, then its Q).
    kept = list(m.graph.node)
    for _ in range(2):
        used = {i for n in kept for i in n.input} | {o.name for o in m.graph.output}
        kept = [n for n in kept if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                or n.name in mine or any(o in used for o in n.output)]
    del m.graph.node[:]
    m.graph.node.extend(kept)
    return m


def sensitivity(reference: Path, quantized: Path, images: Path) -> list[dict]:
    """Rows sorted worst first: layer, mean PSNR vs float32 over ``images`` with only it quantized."""
    import onnx

    info = read_model_info(reference)
    s = info.scale
    lrs = []
    for path in list_images(images):
        hr = load_rgb(path)
        lrs.append(imresize(hr[: hr.shape[0] // s * s, : hr.shape[1] // s * s], 1.0 / s))
    ref = _session(reference)
    refs = [_run(ref, info.input_name, lr, info.io) for lr in lrs]
    q = onnx.load(str(quantized))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layer in qdq_groups(q):
            p = Path(tmp) / "one.onnx"
            onnx.save(only_layer(q, layer), str(p))
            sess = _session(p)
            vals = [psnr(_run(sess, info.input_name, lr, info.io), r) for lr, r in zip(lrs, refs)]
            rows.append({"layer": layer, "psnr_vs_fp32": float(np.mean(vals))})
    return sorted(rows, key=lambda r: r["psnr_vs_fp32"])
