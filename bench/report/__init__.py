"""How a run is shown: selection (which rows), plots, tables, targets, the comparison with the
article and the document. Reads a run folder (bench.results, bench.record) and nothing else:
it never imports impls, a backend, or the code that measures."""
