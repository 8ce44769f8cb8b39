"""daad-edge runtime: the floor of the product.

Only numpy is a hard dependency here; OpenCV, ONNX Runtime, TensorRT and pycuda are imported
lazily where they are used. This package never imports torch, train/ or export/: a Jetson
installs the runtime without PyTorch.
"""

__version__ = "0.1.0"
