"""The ``alpr-topo`` command line."""

from __future__ import annotations

import json
import sys

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alpr-topo")
def cli() -> None:
    """Run license-plate recognition as a graph of processes described by a YAML topology.

    \b
    Quick start:
      alpr-topo validate topologies/demo.yaml   check a topology, with file:line errors
      alpr-topo up topologies/demo.yaml         run it (Ctrl-C drains and stops)
      alpr-topo status                          what every stage is doing
      alpr-topo swap STAGE --set key=value      replace a stage while the graph runs
    """


@cli.command()
@click.argument("topology", type=click.Path(dir_okay=False))
def validate(topology: str) -> None:
    """Check TOPOLOGY and report every mistake as FILE:LINE: problem, expected."""
    from ..core.topology import TopologyError, load

    try:
        topo = load(topology)
    except TopologyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    replicas = sum(s.replicas for s in topo.stages.values())
    click.echo(f"{topology}: OK, topology '{topo.name}' with {len(topo.stages)} stages ({replicas} processes)")


@cli.command()
@click.argument("topology", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid"]), default="text", show_default=True,
              help="text for the terminal, dot for Graphviz, mermaid for Markdown pages")
def graph(topology: str, fmt: str) -> None:
    """Draw the stage graph of TOPOLOGY."""
    from ..core.topology import TopologyError, load
    from .graph import render

    try:
        topo = load(topology)
    except TopologyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    click.echo(render(topo, fmt))


def main() -> None:
    from ..core.plugins import plugin_manager

    plugin_manager().hook.alpr_topo_cli_commands(cli=cli)
    cli(prog_name="alpr-topo")


if __name__ == "__main__":
    main()
