"""Real datasets in their published layouts, each registered in the dataset registry on import
(the entry point ``samplerbench.datasets: adapters``)."""

from samplerbench.data.adapters import captioned, instances, kinetics, lists, untrimmed  # noqa: F401
