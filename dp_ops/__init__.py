"""DP mathematics for dprelease: samplers, sensitivities, thresholds, accounting.

Nothing in this package imports Spark; every function works on Python numbers or numpy arrays,
so it can be tested without a JVM.
"""
