"""Entry points: read the spec, run the release on Spark, write tables and the manifest."""
