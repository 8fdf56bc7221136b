"""Exact rewrites of the exported graph that CPU runtimes execute faster.

The EUSR upscaling module (``train.models.eusr.EnhancedUpscalingModule``) stacks its four
taps on a new axis and pixel-shuffles them: ``torch.stack(taps, 2).reshape(b, 4c, h, w)``
then ``PixelShuffle(2)``. Exported, that is ``Unsqueeze`` ×4 → ``Concat(axis=2)`` →
``Reshape`` (with ``Shape`` arithmetic) → ``DepthToSpace(CRD)``. OpenVINO runs the
rank-5 concat with its reference kernel and reorders each tap out of and back into its
blocked layout: on the bundled compact model that data movement was ~16 % of a 496×286
call. The same pixels come from ``Concat(axis=1)`` of the taps → ``DepthToSpace(DCR)``:

* CRD: ``out[c, bh+i, bw+j] = in[c·b² + i·b + j]`` and the stack puts tap ``k`` at
  channel ``c·b² + k``, so the pixel takes tap ``i·b + j``;
* DCR: ``out[c, bh+i, bw+j] = in[(i·b + j)·C + c]`` and the channel concat puts tap ``k``
  at channel ``k·C + c``: tap ``i·b + j`` again.

Pure data movement, so the rewritten graph's outputs are bit-identical (checked in
tests/test_export_rewrites.py); OpenVINO then keeps the taps blocked (1.2-1.4× faster on
the compact model, 2 threads) and ONNX Runtime gains a few per cent.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from onnx import helper, numpy_helper

__all__ = ["fuse_stacked_pixel_shuffle", "prune_dead_nodes"]


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _constant_ints(name: str, graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto]) -> list[int] | None:
    """The integer values of tensor ``name`` when it is an initializer or a Constant node."""
    for init in graph.initializer:
        if init.name == name:
            return [int(v) for v in numpy_helper.to_array(init).reshape(-1)]
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        value = _attr(node, "value")
        if isinstance(value, onnx.TensorProto):
            return [int(v) for v in numpy_helper.to_array(value).reshape(-1)]
    return None


def _unsqueeze_axes(node: onnx.NodeProto, graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto]) -> list[int]:
    axes = _attr(node, "axes")  # opset < 13
    if axes is not None:
        return [int(a) for a in axes]  # type: ignore[attr-defined]
    if len(node.input) > 1:
        return _constant_ints(node.input[1], graph, producers) or []
    return []


def fuse_stacked_pixel_shuffle(model: onnx.ModelProto) -> int:
    """Rewrite every stack → reshape → ``DepthToSpace(CRD)`` into concat → ``DepthToSpace(DCR)``.

    Only the exact pattern torch's exporters write for a stack on axis 2 of rank-4 taps
    (``Unsqueeze(axes=[2])`` ×b², ``Concat(axis=2)``, ``Reshape``, ``DepthToSpace`` with
    ``blocksize=b``) is touched, and only when the stack and the reshape feed nothing else.
    The nodes left unused are removed. Returns how many shuffles were rewritten.
    """
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    outputs = {o.name for o in graph.output}
    rewritten = 0
    for d2s in [n for n in graph.node if n.op_type == "DepthToSpace"]:
        mode = _attr(d2s, "mode", b"DCR")
        block = _attr(d2s, "blocksize")
        view = producers.get(d2s.input[0])
        if mode not in (b"CRD", "CRD") or not isinstance(block, int) or view is None or view.op_type != "Reshape":
            continue
        stack = producers.get(view.input[0])
        if stack is None or stack.op_type != "Concat" or _attr(stack, "axis") not in (2, -3):
            continue
        if len(stack.input) != block * block:
            continue
        taps = [producers.get(name) for name in stack.input]
        if not all(t is not None and t.op_type == "Unsqueeze" for t in taps):
            continue
        if not all(_unsqueeze_axes(t, graph, producers) in ([2], [-3]) for t in taps if t is not None):
            continue
        private = [view.output[0], stack.output[0], *stack.input]
        if any(readers.get(name, 0) != 1 or name in outputs for name in private):
            continue
        concat = helper.make_node(
            "Concat",
            [t.input[0] for t in taps if t is not None],
            [f"{d2s.output[0]}_taps"],
            name=f"{d2s.name}_taps_concat",
            axis=1,
        )
        fused = helper.make_node(
            "DepthToSpace", [concat.output[0]], list(d2s.output), name=d2s.name, blocksize=block, mode="DCR"
        )
        at = list(graph.node).index(d2s)
        graph.node.remove(d2s)
        graph.node.insert(at, fused)
        graph.node.insert(at, concat)
        rewritten += 1
    if rewritten:
        prune_dead_nodes(model)
    return rewritten


def prune_dead_nodes(model: onnx.ModelProto, keep: Iterable[str] = ()) -> None:
    """Remove nodes, initializers and value_info that no graph output depends on."""
    graph = model.graph
    kept = set(keep)
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output} | kept
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output} | kept
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    for info in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(info)
