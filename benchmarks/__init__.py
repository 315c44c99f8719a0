"""The benchmark suite: `python -m benchmarks` (or `make bench`) measures the service against the
model's own in-process speed, in one run, and writes docs/performance.md."""
