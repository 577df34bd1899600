"""On-device runtime: backends, generation, benchmarks (not built yet)."""
