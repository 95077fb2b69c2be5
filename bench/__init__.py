"""The benchmarks behind docs/benchmarks.md; run each as ``python -m bench.<name>`` from the repository root."""
