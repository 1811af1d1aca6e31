"""The alpr-topo command line and benchmarks."""
