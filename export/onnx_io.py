"""The two I/O contracts of an exported model, and the metadata that names them.

``float32-nchw``: input ``lr`` float32 ``[N,3,H,W]`` RGB in 0..255, output ``sr`` float32
``[N,3,sH,sW]``, not clipped (the network's own output).

``uint8-nhwc``: input ``lr`` uint8 ``[N,H,W,3]``; inside the graph: cast to float, transpose
to NCHW, the network, Round (half to even, as ``numpy.round``), Clip 0..255, transpose to
NHWC, cast to uint8; output ``sr`` uint8 ``[N,sH,sW,3]``. A quarter of the transfer bytes.
The transposes run in float and the two Casts are the graph's edges because TensorRT takes
UINT8 only as a network input or output type (no layer but a cast reads or writes it).
``export/uint8_boundary.py`` checks the rule; its ``seal_uint8_input`` rewires the dynamo
exporter's ``Shape(lr)`` reads to the Cast, so that the Cast is the only reader of ``lr``.

The exporter writes either contract in two precisions (:data:`EXPORT_PRECISIONS`): ``fp32``,
or ``fp16`` where the graph computes in float16 between float32 edges (``export/fp16.py``),
so the I/O above is the same for both and the runtime and TensorRT see no difference at
the edges. ``int8`` graphs exist too, but ``calibration/`` makes them from an fp32 export.
The metadata records ``"precision"`` only for fp16 (and int8): a file without the key is
float32, and float32 exports stay byte-identical to those of earlier versions (an engine
cache keys on the ONNX bytes).

The metadata (ONNX ``metadata_props`` key ``fourpp_eusr``, a JSON object) is read by
``runtime.model_info.parse_metadata``; the key and the I/O names come from there so the
two sides cannot drift apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runtime import layout
from runtime.errors import InvalidArgumentError
from runtime.layout import Precision
from runtime.model_info import METADATA_KEY, ModelIO

__all__ = [
    "METADATA_KEY",
    "ModelIO",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "METADATA_FORMAT",
    "Precision",
    "EXPORT_PRECISIONS",
    "parse_precision",
    "Uint8NHWC",
    "wrap_for_io",
    "parse_io",
    "io_layout",
    "variant_paths",
    "export_paths",
    "set_metadata",
    "read_metadata",
]

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
METADATA_FORMAT = 1
UINT8_SUFFIX = ".uint8"
"""``--io both`` writes ``<stem>.onnx`` (float32-nchw) and ``<stem>.uint8.onnx`` (uint8-nhwc)."""
FP16_SUFFIX = ".fp16"
"""``--precision both`` writes the fp16 graphs as ``<stem>.fp16.onnx`` (and ``<stem>.fp16.uint8.onnx``)."""

EXPORT_PRECISIONS = (Precision.FP32, Precision.FP16)
"""The precisions ``export/to_onnx.py`` writes (``--precision both``); INT8 comes from ``calibration/``."""


def parse_precision(precision: str | Precision, *, what: str = "precision") -> Precision:
    """``precision`` as one of :data:`EXPORT_PRECISIONS`; int8 and anything else are refused
    with an :class:`~runtime.errors.InvalidArgumentError` (a ``ValueError``) naming ``what``."""
    try:
        value = Precision(precision)
    except ValueError:
        value = None
    if value is Precision.INT8:
        raise InvalidArgumentError(
            f"{what} int8 is not made by the ONNX exporter, which writes "
            f"{' or '.join(p.value for p in EXPORT_PRECISIONS)} graphs; for INT8 export fp32, then "
            "quantize it: python -m calibration quantize MODEL.onnx --data calib.npz -o MODEL.int8.onnx"
        )
    if value is None:
        raise InvalidArgumentError(f"{what} must be one of {[p.value for p in EXPORT_PRECISIONS]}, got {precision!r}")
    return value


class Uint8NHWC(nn.Module):
    """uint8 NHWC in, uint8 NHWC out around a float NCHW [0, 255] network.

    Both transposes run in float32: the Cast from uint8 is the first op on the input and the
    Cast to uint8 the last op, so the graph holds no uint8 tensor but its input and output
    (TensorRT's rule, :mod:`export.uint8_boundary`).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = lr.to(torch.float32).permute(0, 3, 1, 2)
        y = self.net(x)
        # torch.round and ONNX Round both round half to even, as numpy.round does.
        y = torch.clamp(torch.round(y), 0.0, 255.0).permute(0, 2, 3, 1)
        return y.to(torch.uint8)


def parse_io(io: str | ModelIO, *, what: str = "io") -> ModelIO:
    """``io`` as a :class:`ModelIO`, else an ``InvalidArgumentError`` (a ``ValueError``)."""
    try:
        return ModelIO(io)
    except ValueError:
        raise InvalidArgumentError(f"{what} must be one of {[m.value for m in ModelIO]}, got {io!r}") from None


def io_layout(io: str | ModelIO) -> layout.ModelIO:
    """The :class:`runtime.layout.ModelIO` of ``io``: what knows its dtype, axes and shapes
    (the identity once ``runtime.model_info`` re-exports that class)."""
    return layout.ModelIO(parse_io(io))


def wrap_for_io(net: nn.Module, io: str | ModelIO) -> nn.Module:
    """The module to export: ``net`` itself (float32-nchw) or wrapped for uint8-nhwc."""
    io = parse_io(io)
    return net if io is ModelIO.FLOAT32_NCHW else Uint8NHWC(net)


def variant_paths(output: str | os.PathLike, ios: Iterable[str | ModelIO]) -> dict[ModelIO, Path]:
    """Where each I/O variant goes: ``output`` for a single one; for several, the
    float32-nchw model at ``output`` and the uint8-nhwc one at ``<stem>.uint8<suffix>``
    beside it (``model.onnx`` → ``model.uint8.onnx``)."""
    output = Path(output)
    ios = list(dict.fromkeys(parse_io(i) for i in ios))
    if len(ios) == 1:
        return {ios[0]: output}
    suffix = output.suffix or ".onnx"
    stem = output.name[: -len(output.suffix)] if output.suffix else output.name
    paths = {}
    for io in ios:
        tag = "" if io is ModelIO.FLOAT32_NCHW else UINT8_SUFFIX
        paths[io] = output.with_name(f"{stem}{tag}{suffix}")
    return paths


def export_paths(
    output: str | os.PathLike, ios: Iterable[str | ModelIO], precisions: Iterable[str | Precision] = (Precision.FP32,)
) -> dict[tuple[Precision, ModelIO], Path]:
    """Where each (precision, I/O) variant goes. One precision: :func:`variant_paths`
    (``output`` itself for a single I/O). Both: the fp32 files as :func:`variant_paths`
    of ``output``, the fp16 ones as :func:`variant_paths` of ``<stem>.fp16<suffix>``
    (``model.onnx`` → ``model.fp16.onnx``, ``model.fp16.uint8.onnx``)."""
    output = Path(output)
    precisions = list(dict.fromkeys(parse_precision(p) for p in precisions))
    ios = list(dict.fromkeys(parse_io(i) for i in ios))
    paths: dict[tuple[Precision, ModelIO], Path] = {}
    for precision in precisions:
        base = output
        if len(precisions) > 1 and precision is Precision.FP16:
            suffix = output.suffix or ".onnx"
            stem = output.name[: -len(output.suffix)] if output.suffix else output.name
            base = output.with_name(f"{stem}{FP16_SUFFIX}{suffix}")
        for io, path in variant_paths(base, ios).items():
            paths[(precision, io)] = path
    return paths


def set_metadata(model: Any, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` as JSON under :data:`METADATA_KEY` of an ``onnx.ModelProto``."""
    text = json.dumps(metadata, sort_keys=True)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = text
            return
    prop = model.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, text


def read_metadata(model: Any) -> dict[str, Any] | None:
    """The :data:`METADATA_KEY` JSON of a ModelProto or an ``.onnx`` file; None if absent."""
    if isinstance(model, (str, os.PathLike)):
        import onnx

        model = onnx.load(os.fspath(model), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None
