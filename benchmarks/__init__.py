"""samplerbench: a benchmarking and reproducibility harness for video frame/token samplers.

The installed package maps the repository's top level: ``samplerbench`` is ``benchmarks/``,
``samplerbench.methods`` is ``methods/`` and ``samplerbench.reports`` is ``reports/``.
"""

__version__ = "0.1.0"
