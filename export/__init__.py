"""PyTorch checkpoint -> ONNX bundle; ONNX -> TensorRT engine (the builder imports without torch)."""
