"""Load tests and benchmarks of the consent gateway around the demo site (not part of the package)."""
