"""`rnnbench compare BASE OTHER...`: did the code get faster, slower, heavier or less exact?

Reads run folders (`rnnbench sweep --out DIR`) and pytest-benchmark JSON files into one
form (sources), pairs their rows by key (pairing), tests each timed pair on its raw samples
(stats), checks that the runs come from comparable machines (machines) and writes
compare.md, its plots and a CSV (document). command is the CLI subcommand.

Like bench.report, it reads files only: no backend, no torch, no timing code (one constant,
the SIMD flags meta.json lists, comes from bench.measure.machine, which imports numpy only).
"""
