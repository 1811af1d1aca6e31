"""Every hook alpr-topo calls, each documented by its docstring.

Implement them in a module or class, mark each function with ``@hookimpl`` and expose the module
through the ``alpr_topo.plugins`` entry point group of your package (``alpr-topo new-plugin``
writes one for you). The built-in stages are registered the same way, by
``alpr_topo.plugins.builtin``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from ..core.stage import Stage
    from ..core.topology import Topology

PROJECT = "alpr_topo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def alpr_topo_stage_types() -> "list[type[Stage]]":
    """Return the stage classes this plugin provides.

    Each class derives from :class:`alpr_topo.core.stage.Stage` (or ``Source``) and sets a
    unique ``type_name`` such as ``"mycompany.blur_faces"``. Topologies refer to stages by that
    name; two plugins giving the same name is an error that names both.
    """


@hookspec
def alpr_topo_validate_topology(topology: "Topology") -> "list[tuple[int, str]]":
    """Check a loaded topology beyond what the schema says; return ``(line, message)`` problems.

    Called by ``alpr-topo validate`` and before ``alpr-topo up`` starts anything, after the
    built-in checks passed. Use it for rules that span stages, e.g. "my OCR stage needs a
    detector upstream". ``line`` is the YAML line of the offending item (``topology.stages[name].line``).
    """


@hookspec
def alpr_topo_cli_commands(cli: "click.Group") -> None:
    """Add sub-commands to the ``alpr-topo`` command line with ``cli.add_command(...)``."""


@hookspec
def alpr_topo_stage_started(stage_name: str, stage: "Stage", info: "dict[str, Any]") -> None:
    """Called inside a stage process once its ``setup`` succeeded, before the first envelope.

    ``info`` holds the replica index, the instance id and the process id; use it for
    instrumentation (tracing, custom metrics) that should follow every stage of a graph.
    """
