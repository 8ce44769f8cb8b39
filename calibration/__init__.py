"""Per-product thresholds measured through a runtime backend, their reports and drift checks."""
