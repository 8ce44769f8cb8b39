"""Training side: synthetic data, the DAAD model and its baselines, metrics.

Importing this package does not import torch: the data generator and the metrics are
torch-free, so calibration/ and a Jetson can use them.
"""
