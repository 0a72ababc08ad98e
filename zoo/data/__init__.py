"""Data the package ships (the digits). Packing and encoding shards are jobs (jobs/pack.py, jobs/encode.py)."""
