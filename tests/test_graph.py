"""Graph rendering: every stage and edge appears in each format, with types and replicas."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from alpr_topo.core.topology import Topology, load, parse
from alpr_topo.tools.graph import render

GOOD = Path(__file__).parent / "topologies" / "good"


@pytest.fixture
def fan() -> Topology:
    """Two sources into a replicated stage that fans out to two sinks (fan-in and fan-out)."""
    return parse(textwrap.dedent("""\
        name: fan
        stages:
          cam: {type: source.test_pattern}
          cam2: {type: source.test_pattern}
          work: {type: transform.passthrough, inputs: [cam, cam2], replicas: 2}
          out: {type: sink.jsonl, inputs: [work], params: {path: x.jsonl}}
          end: {type: sink.null, inputs: [work]}
        """))


def edges(topo: Topology) -> list[tuple[str, str]]:
    return [(up, s.name) for s in topo.stages.values() for up in s.inputs]


@pytest.mark.parametrize("fixture", sorted(p.name for p in GOOD.glob("*.yaml") if p.name != "env.yaml"))
def test_dot_has_every_stage_and_edge(fixture: str) -> None:
    topo = load(str(GOOD / fixture))
    dot = render(topo, "dot")
    assert dot.startswith(f'digraph "{topo.name}" {{') and dot.endswith("}")
    for stage in topo.stages.values():
        assert re.search(rf'^\s*"{stage.name}" \[label="{re.escape(stage.name)}[^"]*\\n{re.escape(stage.type)}"',
                         dot, re.M), stage.name
    for up, down in edges(topo):
        assert f'  "{up}" -> "{down}";' in dot
    assert dot.count("->") == len(edges(topo))


def test_dot_labels_show_replicas(fan: Topology) -> None:
    dot = render(fan, "dot")
    assert '"work" [label="work x2\\ntransform.passthrough"];' in dot
    assert '"cam" [label="cam\\nsource.test_pattern", shape=ellipse];' in dot


def test_dot_groups_stages_by_host() -> None:
    topo = parse(textwrap.dedent("""\
        name: hosts
        transport: {kind: tcp, base_port: 60200}
        hosts: {edge: 10.255.255.1}
        stages:
          cam: {type: source.test_pattern, host: edge}
          out: {type: sink.null, inputs: [cam], host: edge}
        """))
    dot = render(topo, "dot")
    assert 'subgraph "cluster_edge" {' in dot and 'label="edge (10.255.255.1)";' in dot
    assert '"cam" [label="cam @edge\\nsource.test_pattern", shape=ellipse];' in dot


def test_mermaid(fan: Topology) -> None:
    text = render(fan, "mermaid")
    assert text.startswith("flowchart LR\n")
    assert text.splitlines() == [
        "flowchart LR",
        '  s0(["cam<br/>source.test_pattern"])',
        '  s1(["cam2<br/>source.test_pattern"])',
        '  s2["work x2<br/>transform.passthrough"]',
        '  s3["out<br/>sink.jsonl"]',
        '  s4["end<br/>sink.null"]',
        "  s0 --> s2",
        "  s1 --> s2",
        "  s2 --> s3",
        "  s2 --> s4",
    ]


def test_text_tree(fan: Topology) -> None:
    assert render(fan, "text").splitlines() == [
        "fan: 5 stages, 6 processes, transport ipc",
        "cam (source.test_pattern)",
        "   -> work x2 (transform.passthrough)",
        "      -> out (sink.jsonl)",
        "      -> end (sink.null)",
        "cam2 (source.test_pattern)",
        "   -> work x2 (see above)",
    ]


def test_text_is_the_default(fan: Topology) -> None:
    assert render(fan) == render(fan, "text")


def test_unknown_format(fan: Topology) -> None:
    with pytest.raises(ValueError, match="unknown graph format 'svg', expected one of: text, dot, mermaid"):
        render(fan, "svg")
