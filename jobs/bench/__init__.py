"""Benchmarks: each platform path measured beside the bare baseline it wraps, in the same run."""
