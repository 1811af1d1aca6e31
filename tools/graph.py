"""Draw a topology's stage graph: as text for the terminal, Graphviz dot, or a Mermaid flowchart.

All three formats show the same facts: each stage's name, type, replicas (``x2``) and host, and
one edge per ``inputs`` entry, so fan-out and fan-in are visible wherever the graph is pasted.
"""

from __future__ import annotations

from ..core.topology import StageDecl, Topology

FORMATS = ("text", "dot", "mermaid")


def render(topology: Topology, fmt: str = "text") -> str:
    """The graph of ``topology`` in ``fmt`` (one of :data:`FORMATS`)."""
    renderers = {"text": render_text, "dot": render_dot, "mermaid": render_mermaid}
    if fmt not in renderers:
        raise ValueError(f"unknown graph format {fmt!r}, expected one of: {', '.join(FORMATS)}")
    return renderers[fmt](topology)


def _title(stage: StageDecl) -> str:
    """``work x2 @edge1``: the name plus what changes how many processes run it, and where."""
    title = stage.name
    if stage.replicas > 1:
        title += f" x{stage.replicas}"
    if stage.host:
        title += f" @{stage.host}"
    return title


# -- text ---------------------------------------------------------------------------------------


def render_text(topology: Topology) -> str:
    """An indented tree from each source; a stage reached twice (fan-in) is expanded once.

    A tree reads top to bottom in a terminal without any tool; repeating a shared subtree would
    make fan-in look like two copies of the same stages, so later visits say "see above".
    """
    stages = topology.stages
    processes = sum(s.replicas for s in stages.values())
    lines = [f"{topology.name}: {len(stages)} stages, {processes} processes, transport {topology.transport.kind}"]
    shown: set[str] = set()
    for source in topology.sources():
        _text_tree(topology, source, 0, shown, lines)
    for name in topology.order():  # anything not reachable from a source (cannot pass validation)
        if name not in shown:
            _text_tree(topology, name, 0, shown, lines)
    return "\n".join(lines)


def _text_tree(topology: Topology, name: str, depth: int, shown: set[str], lines: list[str]) -> None:
    stage = topology.stages[name]
    arrow = "-> " if depth else ""
    indent = "   " * depth
    if name in shown:
        lines.append(f"{indent}{arrow}{_title(stage)} (see above)")
        return
    shown.add(name)
    lines.append(f"{indent}{arrow}{_title(stage)} ({stage.type})")
    for down in topology.outputs(name):
        _text_tree(topology, down, depth + 1, shown, lines)


# -- Graphviz -----------------------------------------------------------------------------------


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(topology: Topology) -> str:
    """A ``digraph``; stages on a named host are grouped in a cluster labelled with its address."""
    lines = [f"digraph {_dot_quote(topology.name)} {{", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    by_host: dict[str, list[StageDecl]] = {}
    for stage in topology.stages.values():
        by_host.setdefault(stage.host, []).append(stage)
    for host, stages in by_host.items():
        indent = "  "
        if host:
            lines.append(f"  subgraph {_dot_quote('cluster_' + host)} {{")
            address = topology.hosts.get(host, "?")
            lines.append(f"    label={_dot_quote(f'{host} ({address})')};")
            indent = "    "
        for stage in stages:
            label = f"{_title(stage)}\\n{stage.type}"
            shape = ", shape=ellipse" if not stage.inputs else ""
            lines.append(f"{indent}{_dot_quote(stage.name)} [label=\"{label}\"{shape}];")
        if host:
            lines.append("  }")
    for stage in topology.stages.values():
        for upstream in stage.inputs:
            lines.append(f"  {_dot_quote(upstream)} -> {_dot_quote(stage.name)};")
    lines.append("}")
    return "\n".join(lines)


# -- Mermaid ------------------------------------------------------------------------------------


def render_mermaid(topology: Topology) -> str:
    """A ``flowchart LR``; node ids are ``s0, s1, ...`` because Mermaid reserves words like ``end``."""
    ids = {name: f"s{i}" for i, name in enumerate(topology.stages)}
    lines = ["flowchart LR"]
    for name, stage in topology.stages.items():
        label = f"{_title(stage)}<br/>{stage.type}".replace('"', "#quot;")
        open_, close = ("([", "])") if not stage.inputs else ("[", "]")
        lines.append(f'  {ids[name]}{open_}"{label}"{close}')
    for stage in topology.stages.values():
        for upstream in stage.inputs:
            if upstream in ids:
                lines.append(f"  {ids[upstream]} --> {ids[stage.name]}")
    return "\n".join(lines)
