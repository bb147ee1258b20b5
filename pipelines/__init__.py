"""Spark DataFrame -> DataFrame transformations of a DP release, built on :mod:`dp_ops`.

No file I/O and no argument parsing here: :mod:`jobs` reads and writes.
"""
