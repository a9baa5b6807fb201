"""Benchmarks of durable side by side with its peers; run them with ``python -m benchmarks``.

See ``docs/benchmarks.md`` for what each benchmark measures and how to read the figures.
"""
