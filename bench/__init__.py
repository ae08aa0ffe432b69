"""Benchmarks: crib and containerd's CRI plugin on the same machine, through the same client."""
