"""`rnnbench study`: the source article's training advice, measured on the user's machine.

Each study is a small sweep over training settings (bench.study.studies: the settings, the
article's claim, the verdict rule), run by bench.study.run into a tidy, resumable CSV (one
row per setting x seed) and turned into plots and a report.md by bench.study.report. Data
flows one way, as for sweeps: what is run (a Study), what was measured (rows), how it is
shown (the report, which reads the run folder only).
"""
