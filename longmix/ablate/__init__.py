"""Small-scale reproductions of the paper's ablations: suites of arms sharing a base, run, cached, reported."""
