"""Training: the Ray Train driver, the per-worker loop, its checkpoint state, and the Ray Tune search over it."""
