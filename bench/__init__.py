"""etlctl's benchmarks: `make bench`, or `.venv/bin/python bench/run.py [--quick]` (see bench/run.py)."""
