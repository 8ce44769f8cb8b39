"""The benchmark: per-stage latency and throughput per backend, the environment it ran on, reports."""
