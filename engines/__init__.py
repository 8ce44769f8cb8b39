"""TensorRT engines built on the device that runs them (`daad build`, and `daad teach`'s memory heads).

Torch-free, like runtime/ below it: a Jetson builds its engines without PyTorch. It reads bundles
and backbone parts; where engines live and which may be loaded is runtime.backends.engine_cache.
"""
