"""evaluate: real sample footage, transformed copies, metrics and benchmarks."""
