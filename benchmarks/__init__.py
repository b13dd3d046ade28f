"""Benchmarks of metrickit against its peers: ``python -m benchmarks.run --help``.

Each (task, implementation, size) case runs in a fresh subprocess (:mod:`benchmarks.worker`) so
its peak memory is its own; :mod:`benchmarks.run` builds the grid, checks that implementations
with the same definition agree, and writes the markdown report and the plot.
"""
