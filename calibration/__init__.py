"""INT8 calibration: explicit Q/DQ ONNX for TensorRT's strongly typed INT8 path, proven on CPU.

TensorRT 10/11 build INT8 engines only from graphs with QuantizeLinear/DequantizeLinear
nodes, so the scales are chosen here, on real photos, with NVIDIA ModelOpt's ONNX PTQ on
the CPU onnxruntime, and checked against the float32 model before any engine is built::

    python -m calibration collect --images data/photos/train -o calib.npz --model m.onnx \\
        --samples 48 --tile 56 --halo 8 --flips
    python -m calibration quantize m.onnx --data calib.npz -o m.int8.onnx \\
        [--method entropy|max] [--auto-keep 48] [--keep-fp 'node_conv2d_46$' ...]
    python -m calibration gate m.onnx m.int8.onnx            # the gate alone
    python -m calibration sensitivity m.onnx --data calib.npz  # each layer's cost alone

By default residual Adds read float tensors and the most sensitive layers stay in float
until the model reaches 48 dB vs float32 on the calibration windows (``calibration.sensitivity``).

Needs the ``calib`` extra (``pip install -e '.[calib]'``), not ModelOpt's ``[onnx]`` one.
"""
