"""The benchmarks and GPU-code tools beside the library (pytest-benchmark suites, make gpu-check,
the SASS counter); importable from the repository root as benchmarks.<name>."""
