"""`daad teach`: a device teaches itself a product from good parts, without PyTorch (docs/TEACH.md).

The backbone part runs on the runtime backend, the coreset is numpy (patchmemory.coreset, the
code `daad train` uses), the memory head is written with the `onnx` package, and the threshold
comes from `daad calibrate`'s code: the result is an ordinary bundle."""
