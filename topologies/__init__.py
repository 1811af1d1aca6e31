"""Ready topologies, installed as package data so `alpr-topo up cpu` finds them anywhere."""
