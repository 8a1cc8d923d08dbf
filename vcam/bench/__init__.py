"""`vcam bench ...`: benchmarks that print their figures (and JSON with --json)."""
