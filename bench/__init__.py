"""rnnbench's harness. One-way flow: what runs (spec) -> running it (run/, measuring with
measure/, training with train/) -> what was measured (record, results) -> how it is shown
(report/, which reads a run folder and imports nothing that measures)."""
