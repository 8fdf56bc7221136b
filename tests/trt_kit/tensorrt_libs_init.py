"""STUB tensorrt_libs package (introspection only, NOT NVIDIA's tensorrt_libs).

Holds libnvinfer.so.N / libnvonnxparser.so.N / libnvinfer_plugin.so.N built from
trt_stub.c (tests/trt_kit/, copied here by tests/trt_kit/install.py).  tensorrt_bindings/__init__.py does `import tensorrt_libs`
first; like the real package, this one then dlopen()s every *.so* next to it so that the
bindings' DT_NEEDED entries are satisfied by SONAME.  Every TensorRT factory returns NULL.
"""

import ctypes
import glob
import os

CURDIR = os.path.realpath(os.path.dirname(__file__))
TRT_STUB = True

for _lib in sorted(glob.iglob(os.path.join(CURDIR, "*.so.*"))):
    ctypes.CDLL(_lib)
