"""One source's analysis: encoder calls, the windowed aggregation, job results and output files."""
