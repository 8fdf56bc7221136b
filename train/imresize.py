"""MATLAB-compatible bicubic ``imresize``; lives in ``runtime.imresize`` (numpy only) so the
runtime, benchmarks and training all make LR images the same way."""

from runtime.imresize import cubic, imresize, resize_weights

__all__ = ["imresize", "cubic", "resize_weights"]
