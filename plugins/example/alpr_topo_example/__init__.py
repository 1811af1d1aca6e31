"""Example alpr-topo plugin: stages that read and write shared-memory frames.

The stage types are registered through the ``alpr_topo.plugins`` entry point, which names
:mod:`alpr_topo_example.plugin`.
"""

__version__ = "0.1.0"
