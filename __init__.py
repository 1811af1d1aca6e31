"""alpr-topo: license-plate recognition as a graph of independent processes."""

__version__ = "0.1.0"
