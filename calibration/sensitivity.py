"""Per-layer sensitivity, and choosing which layers stay in high precision.

One calibration gives every layer its scales; a layer is "kept" by bypassing the Q/DQ
pairs that feed it (its input activation and its weight), which is exactly what
ModelOpt's ``nodes_to_exclude`` would have produced, without calibrating again.

- :func:`sensitivity`: PSNR vs float32 with only one layer quantized, per layer: what
  quantizing that layer alone costs.
- :func:`choose_kept_layers`: keep the worst layers, one more at a time, until the whole
  INT8 model reaches a PSNR target vs float32, or a cap on their number.

Both measure on the calibration windows, never on the photos the gate holds out: the gate
must judge a model whose choices were made without seeing its test set.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "qdq_groups",
    "layer_labels",
    "bypass",
    "only_layer",
    "WindowScorer",
    "sensitivity",
    "Selection",
    "choose_kept_layers",
]

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def qdq_groups(model) -> dict[str, list[str]]:
    """Quantized node name → the DequantizeLinear nodes (fed by a QuantizeLinear) it reads."""
    producer = {o: n for n in model.graph.node for o in n.output}
    groups: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.op_type in _QDQ:
            continue
        for i in n.input:
            dq = producer.get(i)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    groups.setdefault(n.name, []).append(dq.name)
    return groups


def layer_labels(model) -> dict[str, str]:
    """Node name → the PyTorch module it came from (its weight's name), where one is found.

    Exported node names (``node_conv2d_46``) say little; ``model.outputs.4`` says which conv.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    labels = {}
    for n in model.graph.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        w = n.input[1]
        for _ in range(3):  # through DequantizeLinear / QuantizeLinear / Cast to the initializer
            if w in inits or w not in producer:
                break
            w = producer[w].input[0]
        if w in inits:
            labels[n.name] = w.removesuffix(".weight")
    return labels


def bypass(model, layers: Iterable[str]):
    """A copy of ``model`` where ``layers`` read the float tensors their Q/DQ pairs wrapped.

    A pair another node still reads stays for that node; pairs nobody reads are removed.
    """
    m = copy.deepcopy(model)
    drop = set(layers)
    groups = qdq_groups(m)
    unknown = drop - set(groups)
    if unknown:
        raise KeyError(f"not quantized layers: {sorted(unknown)} (quantized: {sorted(groups)[:5]}...)")
    producer = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.name not in drop:
            continue
        for k, i in enumerate(n.input):
            dq = producer.get(i)
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.name in groups[n.name]:
                n.input[k] = producer[dq.input[0]].input[0]
    kept = list(m.graph.node)
    for _ in range(2):  # DequantizeLinear nodes first, then the QuantizeLinear that fed them
        used = {i for n in kept for i in n.input} | {o.name for o in m.graph.output}
        kept = [n for n in kept if n.op_type not in _QDQ or any(o in used for o in n.output)]
    del m.graph.node[:]
    m.graph.node.extend(kept)
    used = {i for n in kept for i in n.input}
    inits = [t for t in m.graph.initializer if t.name in used]  # the bypassed pairs' scales
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    return m


def only_layer(model, keep: str):
    """A copy of ``model`` with every Q/DQ pair bypassed except those feeding node ``keep``."""
    return bypass(model, [name for name in qdq_groups(model) if name != keep])


def _pooled_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


class WindowScorer:
    """PSNR vs the float32 model over fixed input windows (the model's own layout).

    The PSNR pools the squared error of all windows; the float32 outputs are computed once.
    """

    def __init__(self, reference: Path | bytes, windows: np.ndarray, input_name: str, batch: int = 8) -> None:
        self.windows, self.input_name, self.batch = windows, input_name, batch
        ref = reference if isinstance(reference, bytes) else Path(reference).read_bytes()
        self.reference = self._outputs(_session(ref))

    def _outputs(self, sess) -> np.ndarray:
        outs = [
            sess.run(None, {self.input_name: self.windows[i : i + self.batch]})[0]
            for i in range(0, len(self.windows), self.batch)
        ]
        return np.concatenate(outs)

    def __call__(self, model) -> float:
        out = self._outputs(_session(model.SerializeToString()))
        if np.isnan(out).any():
            return -math.inf
        return _pooled_psnr(out, self.reference)


def _session(model_bytes: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def _progress(items: list, desc: str, show: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="layer", disable=not show, leave=False)


def sensitivity(quantized, score: Callable[[object], float], *, progress: bool = False) -> list[dict]:
    """Rows sorted worst first: ``layer`` and ``psnr_vs_fp32`` with only that layer quantized."""
    rows = [
        {"layer": layer, "psnr_vs_fp32": score(only_layer(quantized, layer))}
        for layer in _progress(list(qdq_groups(quantized)), "sensitivity", progress)
    ]
    return sorted(rows, key=lambda r: r["psnr_vs_fp32"])


@dataclass
class Selection:
    """The layers kept in high precision, and PSNR vs float32 as each one was added."""

    layers: list[str]
    target_psnr: float
    max_layers: int
    psnr_all_int8: float
    trace: list[dict] = field(default_factory=list)
    ranking: list[dict] = field(default_factory=list)

    @property
    def psnr(self) -> float:
        return self.trace[-1]["psnr_vs_fp32"] if self.trace else self.psnr_all_int8

    @property
    def reached(self) -> bool:
        return self.psnr >= self.target_psnr


def choose_kept_layers(
    quantized,
    score: Callable[[object], float],
    *,
    target_psnr: float,
    max_layers: int,
    rank: Callable[[object], float] | None = None,
    progress: bool = False,
) -> Selection:
    """Keep the most sensitive layers until ``score`` of the whole model reaches ``target_psnr``.

    Sensitivity (with ``rank``, a cheaper scorer, if given) ranks the layers one at a time;
    their errors add up, so the whole model is re-scored after each addition and the search
    stops as soon as the target is met (or at ``max_layers``, reported as not reached: the
    caller decides, the gate judges).
    """
    base = score(quantized)
    sel = Selection(layers=[], target_psnr=target_psnr, max_layers=max_layers, psnr_all_int8=base)
    if base >= target_psnr or max_layers <= 0:
        return sel
    sel.ranking = sensitivity(quantized, rank or score, progress=progress)
    for row in sel.ranking[:max_layers]:
        sel.layers.append(row["layer"])
        got = score(bypass(quantized, sel.layers))
        sel.trace.append({"layer": row["layer"], "psnr_vs_fp32": got})
        if got >= target_psnr:
            break
    return sel
