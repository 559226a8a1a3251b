"""The benchmark suite: `python -m scripts.bench.run [--smoke] [--only ...]` (see run.py)."""
