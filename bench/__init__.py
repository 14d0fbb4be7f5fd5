"""rnnbench benchmark harness."""
