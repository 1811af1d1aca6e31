"""Templates for `alpr-topo new-plugin`."""
