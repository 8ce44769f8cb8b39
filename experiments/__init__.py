"""The measurements behind docs/RESULTS.md: learning curves, model tables, granularity, the results run.

They compose every stage (train, export, runtime backends), so they sit above all of them."""
