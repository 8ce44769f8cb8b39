"""The end-to-end demo: every stage of the product on synthetic data, on the CPU."""
