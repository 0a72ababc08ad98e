"""Data the package ships (the digits) and the readers of training data."""

from jobs.encode import encode  # noqa: E402,F401  (zoo.data.encode: precomputed-latent shards)
from jobs.pack import pack  # noqa: E402,F401  (zoo.data.pack: image shards from a folder, CIFAR-10 or digits)
