"""Per-product thresholds measured through a runtime backend; INT8 calibration data."""
