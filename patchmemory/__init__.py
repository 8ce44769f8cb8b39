"""The numpy side of a feature memory: choosing the patches it keeps (a coreset). No torch, so
`daad train` (PyTorch) and a device teaching itself a product (no PyTorch) keep the same memory."""
