"""Data the package ships (the digits) and the readers of training data."""
