"""Training jobs: the per-worker loop, its data, its context (local or Ray Train), checkpoints."""
