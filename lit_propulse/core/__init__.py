"""The shared core (layer 0): errors, the downscaler ``DS``, image I/O, seeding, weights I/O with the
export registry, the missing-file registry, the batch and output types, and shape checks.

It imports nothing else of the project; every other layer builds on it (see ``tests/test_layers.py``).
"""
