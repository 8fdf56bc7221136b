"""uint8 only at the edges of a graph: the rule TensorRT sets for uint8 models, checked on ONNX.

TensorRT supports UINT8 only as the type of a network input or output tensor
(onnx-tensorrt ``docs/operators.md``: "UINT8 is only supported as network input or output
tensor types"; its table lists UINT8 for Cast/CastLike and for no other operator, not even
Shape or Transpose), and ``trt.DataType.UINT8`` says to convert a uint8 network input to
float32/float16 before any other layer reads it, and to convert to uint8 only to produce a
network output. So a uint8-nhwc graph (``export/onnx_io.py``) must be, at its edges::

    lr (uint8) -> Cast(to=FLOAT|FLOAT16) -> ... float ... -> Cast(to=UINT8) -> sr (uint8)

with the Cast the only node that reads ``lr`` and the node that produces ``sr``.
:func:`uint8_findings` lists everything that breaks it: any uint8 tensor other than the
graph's own inputs and outputs (in ``value_info``, an initializer, a Constant, the output
of a Cast/QuantizeLinear/... node or one that ONNX type inference finds), a uint8 graph
input read by anything but a Cast to float, a uint8 graph output produced by anything but
a Cast (or read by another node). ``export/to_trt.py`` refuses such a graph before the
parser sees it (:func:`check_uint8_boundary`), naming the tensors and nodes.

The exporter's dynamo path reads the input's batch/height/width with ``Shape(lr)``
(``torch.export`` binds the dynamic sizes to the input placeholder, whatever tensor the
model asked the size of). :func:`seal_uint8_input` rewires those Shape/Size nodes to the
Cast's output, which has the same shape, and moves the Cast first: the same values, and the
Cast becomes the only reader of the uint8 input.

Only the ``onnx`` package is needed (``python -m export.uint8_boundary MODEL.onnx`` prints
the findings; ``--seal -o OUT.onnx`` writes the sealed graph).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import BuildInputError

__all__ = [
    "Uint8Finding",
    "uint8_findings",
    "inner_uint8_tensors",
    "seal_uint8_input",
    "boundary_message",
    "check_uint8_boundary",
    "main",
]

_UINT8 = 2  # onnx.TensorProto.UINT8
_FLOATS = (1, 10)  # FLOAT, FLOAT16: the only types TensorRT converts uint8 from and to
_SHAPE_ONLY = ("Shape", "Size")  # read only the shape of their input: Cast keeps it


@dataclass(frozen=True)
class Uint8Finding:
    """One tensor that breaks the rule, and where it is (producer, readers, declaration)."""

    tensor: str
    where: str

    def __str__(self) -> str:
        return f"{self.tensor!r}: {self.where}"


def _node_label(node: Any) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"unnamed {node.op_type} node"


def _walk(nodes: Sequence[Any]) -> Iterator[tuple[Any, bool]]:
    """Every node, with whether it lies in a subgraph (If/Loop/Scan bodies) or a function."""
    for node in nodes:
        yield node, False
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for graph in subgraphs:
                for inner, _ in _walk(graph.node):
                    yield inner, True


def _attr(node: Any, name: str) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return attr
    return None


def _casts_to_float(node: Any) -> bool:
    to = _attr(node, "to") if node.op_type == "Cast" else None
    return to is not None and to.i in _FLOATS


def _inferred_types(model: Any) -> dict[str, int]:
    """Element types ONNX type inference finds (empty when it cannot run on the graph)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is a second opinion; the explicit rules below still run
        return {}
    return {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}


def _tensor_types_of_nodes(nodes: Sequence[Any], types: dict[str, int] | None = None) -> dict[str, int]:
    """``types`` plus the element types the nodes fix by themselves: a Cast's ``to``, a
    Constant's value, a QuantizeLinear's ``output_dtype`` or zero point (uint8 without one)."""
    types = {} if types is None else types
    for node, _ in _walk(nodes):
        if not node.output:
            continue
        if node.op_type == "Cast" and (to := _attr(node, "to")) is not None:
            types[node.output[0]] = to.i
        elif node.op_type == "Constant" and (value := _attr(node, "value")) is not None and value.HasField("t"):
            types[node.output[0]] = value.t.data_type
        elif node.op_type == "QuantizeLinear":
            out = _attr(node, "output_dtype")
            if out is not None and out.i:
                types[node.output[0]] = out.i
            elif len(node.input) > 2 and node.input[2]:
                types.setdefault(node.output[0], types.get(node.input[2], 0))
            else:  # no zero point: ONNX's default output type is uint8
                types[node.output[0]] = _UINT8
    return types


def _tensor_types(model: Any) -> dict[str, int]:
    """Element type of every tensor whose type the graph states or implies."""
    graph = model.graph
    types = _inferred_types(model)
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for sparse in graph.sparse_initializer:
        types[sparse.values.name] = sparse.values.data_type
    return _tensor_types_of_nodes(graph.node, types)


def uint8_findings(model: Any) -> list[Uint8Finding]:
    """Everything in ``model`` (an ``onnx.ModelProto``) that breaks the rule in the module
    docstring, one finding per tensor, in graph order; an empty list when the graph is fine."""
    graph = model.graph
    types = _tensor_types(model)
    inits = {i.name for i in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    inputs = [vi.name for vi in graph.input if vi.name not in inits]
    outputs = [vi.name for vi in graph.output]
    boundary = set(inputs) | set(outputs)
    producer: dict[str, Any] = {}
    readers: dict[str, list[Any]] = {}
    walked = list(_walk(graph.node))
    for node, _ in walked:
        for name in node.output:
            producer[name] = node
        for name in node.input:
            if name:
                readers.setdefault(name, []).append(node)
    findings: dict[str, list[str]] = {}

    def add(tensor: str, what: str) -> None:
        findings.setdefault(tensor, [])
        if what not in findings[tensor]:
            findings[tensor].append(what)

    def read_by(name: str) -> str:
        return ", ".join(_node_label(n) for n in readers.get(name, []))

    for name in inputs:
        if types.get(name) != _UINT8:
            continue
        bad = [n for n in readers.get(name, []) if not _casts_to_float(n)]
        if bad:
            add(
                name,
                "uint8 graph input read by " + ", ".join(_node_label(n) for n in bad) + " (only a Cast to "
                "float32/float16 may read it; shape reads: export.uint8_boundary.seal_uint8_input)",
            )
    for name in outputs:
        if types.get(name) != _UINT8:
            continue
        node = producer.get(name)
        if node is None:
            add(name, "uint8 graph output that no node produces")
        elif node.op_type != "Cast":
            add(name, f"uint8 graph output produced by {_node_label(node)} (a Cast to uint8 must produce it)")
        elif (source := types.get(node.input[0])) not in (*_FLOATS, None):
            add(name, f"uint8 graph output cast from element type {source} (TensorRT casts to uint8 from float only)")
        if readers.get(name):
            add(name, f"uint8 graph output also read inside the graph by {read_by(name)}")
    for init in graph.initializer:
        if init.data_type == _UINT8:
            add(init.name, "uint8 initializer" + (f", read by {read_by(init.name)}" if readers.get(init.name) else ""))
    for vi in graph.value_info:
        if vi.type.tensor_type.elem_type == _UINT8 and vi.name not in boundary:
            add(vi.name, "declared uint8 in value_info")
    for name, node in producer.items():
        if types.get(name) == _UINT8 and name not in boundary:
            where = f"uint8 output of {_node_label(node)}"
            if readers.get(name):
                where += f", read by {read_by(name)}"
            add(name, where)
    for name in readers:  # anything else a node reads as uint8 (e.g. only type inference knows)
        if types.get(name) == _UINT8 and name not in boundary and name not in findings:
            add(name, f"uint8 tensor read by {read_by(name)}")
    for function in model.functions:  # a local function's uint8 tensors are inner wherever it is called
        local = _tensor_types_of_nodes(function.node)
        for node, _ in _walk(function.node):
            for name in node.output:
                if local.get(name) == _UINT8:
                    add(f"{function.domain}.{function.name}/{name}", f"uint8 output of {_node_label(node)} in function")
    return [Uint8Finding(tensor, "; ".join(where)) for tensor, where in findings.items()]


def seal_uint8_input(model: Any) -> int:
    """Make a Cast to float the only reader of each uint8 graph input, in place.

    Shape/Size nodes that read the input are rewired to the Cast's output (same shape, so
    the same values), and the Cast moves to the front of the graph (it reads only the
    input, so the order stays topological). Other readers are left alone: they would
    change meaning, and :func:`uint8_findings` still reports them. Returns how many nodes
    were rewired.
    """
    graph = model.graph
    types = _tensor_types(model)
    inits = {i.name for i in graph.initializer}
    rewired = 0
    for vi in graph.input:
        name = vi.name
        if name in inits or types.get(name) != _UINT8:
            continue
        nodes = list(graph.node)
        cast = next((n for n in nodes if _casts_to_float(n) and list(n.input) == [name]), None)
        if cast is None:
            continue
        for node in nodes:
            if node.op_type in _SHAPE_ONLY:
                for k, inp in enumerate(node.input):
                    if inp == name:
                        node.input[k] = cast.output[0]
                        rewired += 1
        moved = type(cast)()
        moved.CopyFrom(cast)
        graph.node.remove(cast)
        graph.node.insert(0, moved)
    return rewired


def inner_uint8_tensors(model: Any) -> list[Uint8Finding]:
    """The findings about tensors other than the graph's own inputs and outputs: the uint8
    tensors that must not exist at all (the rest concern how the edges are read/written)."""
    edges = {vi.name for vi in (*model.graph.input, *model.graph.output)}
    return [f for f in uint8_findings(model) if f.tensor not in edges]


def boundary_message(source: str | os.PathLike[str], findings: Sequence[Uint8Finding]) -> str:
    """The refusal for a graph with ``findings``: the file, each tensor and node, what to do."""
    listing = "\n".join(f"  {f}" for f in findings)
    return (
        f"{source}: {len(findings)} tensor(s) break TensorRT's uint8 rule (UINT8 only as a network input or "
        f"output: a Cast to float must be the only reader of a uint8 input, a Cast to uint8 must produce a "
        f"uint8 output, and no other tensor may be uint8):\n{listing}\nre-export the model with this version's "
        "export/to_onnx.py (it transposes in float and casts last); for Shape/Size readers of the input: "
        f"python -m export.uint8_boundary {source} --seal -o SEALED.onnx"
    )


def check_uint8_boundary(model: Any, *, source: str | os.PathLike[str]) -> None:
    """Raise :class:`~export.errors.BuildInputError` naming ``source`` and every finding
    of :func:`uint8_findings`; return quietly for a graph that keeps uint8 at its edges."""
    findings = uint8_findings(model)
    if findings:
        raise BuildInputError(boundary_message(source, findings))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m export.uint8_boundary MODEL.onnx [--seal -o OUT.onnx]``: 0 clean, 1 findings, 2 bad input."""
    p = argparse.ArgumentParser(prog="python -m export.uint8_boundary", description=__doc__.splitlines()[0])
    p.add_argument("onnx", type=Path, help="ONNX model to check")
    p.add_argument("--seal", action="store_true", help="rewire Shape/Size readers of the uint8 input to its Cast")
    p.add_argument("-o", "--output", type=Path, help="where --seal writes the sealed model")
    args = p.parse_args(argv)
    if args.seal and args.output is None:
        p.error("--seal needs -o OUT.onnx")
    import onnx

    try:
        model = onnx.load(str(args.onnx))
    except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise their own exception types
        print(f"error: {args.onnx}: not a readable ONNX model ({exc})", file=sys.stderr)
        return 2
    if args.seal:
        count = seal_uint8_input(model)
        onnx.save(model, str(args.output))
        print(f"rewired {count} shape read(s) of the uint8 input; wrote {args.output}")
    findings = uint8_findings(model)
    for finding in findings:
        print(finding)
    print(f"{args.output if args.seal else args.onnx}: {len(findings)} uint8 finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
