"""stationd: the data node of a network of scientific field stations."""

__version__ = "0.1.0"
