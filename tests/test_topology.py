"""The topology loader: good files load with defaults, every kind of mistake has an exact message.

Messages are part of the user interface (``FILE:LINE: what is wrong, what was expected``), so
the tests compare whole strings: a reworded message should be a deliberate change.
"""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from alpr_topo.core.plugins import plugin_manager, stage_types
from alpr_topo.core.topology import Problem, StageDecl, Topology, TopologyError, TransportDecl, load, parse
from alpr_topo.plugins.hookspecs import hookimpl
from alpr_topo.tools.cli import cli

HERE = Path(__file__).parent / "topologies"
BAD = HERE / "bad"
GOOD = HERE / "good"
KNOWN = ", ".join(stage_types())  # every registered type, built-ins of all stage modules included
TOP_KEYS = "name, description, stages, transport, hosts, frame_pool, plugins, supervisor, status"
PATTERN_PARAMS = "width, height, fps, count, camera_id"
SOURCES = ", ".join([name for name, cls in stage_types().items() if cls.is_source][:3])  # the message names three
NO_INPUTS = f"expected `inputs: [<upstream>]` (only source types such as {SOURCES} run without inputs)"
JSONL_PATH = "(file to append to; '{replica}' is replaced by the replica index)"

#: Every bad fixture with the exact problems it must produce, as (line, message).
EXPECTED: dict[str, list[tuple[int, str]]] = {
    "yaml_syntax.yaml": [
        (5, "invalid YAML: expected <block end>, but found '<block mapping start>' "
            "(while parsing a block mapping on line 3)"),
    ],
    "not_mapping.yaml": [
        (1, "the top level must be a mapping with at least `name` and `stages`, got a list"),
    ],
    "missing_name_stages.yaml": [
        (1, "missing `name`, expected a topology name such as `name: demo`"),
        (1, "missing `stages`, expected a mapping of stage names to stages"),
    ],
    "bad_name.yaml": [
        (1, "name 'my demo' is not valid, expected 1 to 32 letters, digits, '_' or '-' "
            "(it names sockets and shared memory)"),
    ],
    "unknown_top_key.yaml": [
        (1, "missing `stages`, expected a mapping of stage names to stages"),
        (2, f"unknown key 'stagse', expected one of: {TOP_KEYS}; did you mean 'stages'?"),
    ],
    "duplicate_stage.yaml": [
        (8, "duplicate stage name 'cam' (first defined on line 3), expected each stage name once"),
    ],
    "duplicate_key.yaml": [
        (7, "duplicate key 'fps' in stages.cam.params (first defined on line 6), expected each key once"),
    ],
    "bad_stage_name.yaml": [
        (3, "stage name 'front cam' is not valid, expected letters, digits, '_' or '-'"),
    ],
    "unknown_stage_key.yaml": [
        (5, f"stage 'out' has no inputs, {NO_INPUTS}"),
        (7, "stage 'out': unknown key 'input', expected one of: type, params, inputs, replicas, host; "
            "did you mean 'inputs'?"),
    ],
    "missing_type.yaml": [
        (3, f"stage 'cam': missing `type`, expected a registered stage type (known: {KNOWN})"),
    ],
    "unknown_type.yaml": [
        (6, "stage 'work': unknown stage type 'transfrom.passthrough', did you mean 'transform.passthrough'? "
            "(`alpr-topo plugins` lists every type)"),
        (9, f"stage 'out': unknown stage type 'kafka', expected a registered type (known: {KNOWN})"),
    ],
    "bad_param.yaml": [
        (7, "stage 'cam': parameter 'fps': Input should be greater than or equal to 0 (got -5)"),
        (8, "stage 'cam': parameter 'count': Input should be a valid integer, unable to parse string as an "
            "integer (got 'many')"),
    ],
    "missing_param.yaml": [
        (5, f"stage 'out': missing required parameter 'path' {JSONL_PATH}"),
        (11, f"stage 'out2': missing required parameter 'path' {JSONL_PATH}"),
    ],
    "unknown_param.yaml": [
        (6, "stage 'cam': unknown parameter 'wdith', did you mean 'width'? "
            f"(parameters of source.test_pattern: {PATTERN_PARAMS})"),
        (7, "stage 'cam': unknown parameter 'colour', expected one of the parameters of source.test_pattern: "
            f"{PATTERN_PARAMS}"),
        (11, "stage 'out': unknown parameter 'path', expected no parameters (sink.null takes none)"),
    ],
    "bad_inputs.yaml": [
        (7, "stage 'work': `inputs` must be a list of stage names such as [cam], got the string 'cam'"),
        (10, "stage 'out' lists input 'work' twice, expected each input once"),
        (10, "stage 'out': inputs must be stage names, got a list"),
        (10, "stage 'out': input 'cma' is not a stage, did you mean 'cam'? (stages: cam, work, out2, loop)"),
        (13, "stage 'out2': input 'nothing_like_it' is not a stage, expected one of the stages: "
             "cam, work, out, loop"),
        (16, "stage 'loop' lists itself as an input, expected upstream stages only"),
    ],
    "source_inputs.yaml": [
        (7, "stage 'cam2': source stages take no inputs, expected no `inputs` for type source.test_pattern"),
        (8, f"stage 'out' has no inputs, {NO_INPUTS}"),
        (10, f"stage 'out2' has no inputs, {NO_INPUTS}"),
    ],
    "cycle.yaml": [
        (5, "stages form a cycle a -> b -> c -> a, expected data to flow one way from sources to sinks"),
    ],
    "bad_replicas.yaml": [
        (9, "stage 'work': replicas must be an integer >= 1, got 0"),
        (13, "stage 'out': replicas must be an integer >= 1, got 'two'"),
        (17, "stage 'out2': replicas must be an integer >= 1, got 1.5"),
    ],
    "bad_transport.yaml": [
        (3, "transport.kind: Input should be 'ipc' or 'tcp' (got 'udp')"),
        (4, "transport.base_port: Input should be greater than or equal to 1024 (got 80)"),
        (5, "transport.window: Input should be greater than or equal to 1 (got 0)"),
        (6, "transport.queue_limit: Input should be greater than or equal to 1 (got -1)"),
        (7, "transport: unknown key 'windw', expected one of: kind, base_port, window, queue_limit; "
            "did you mean 'window'?"),
    ],
    "hosts_need_tcp.yaml": [
        (2, "hosts need transport kind tcp, expected `transport: {kind: tcp}` or no `hosts:` section"),
    ],
    "unknown_host.yaml": [
        (9, "stage 'cam': unknown host 'edg1', did you mean 'edge1'? (hosts: edge1, edge2)"),
        (13, "stage 'out': unknown host 'backend', expected one of the hosts: edge1, edge2"),
    ],
    "bad_sections.yaml": [
        (3, "frame_pool.slots: Input should be greater than or equal to 2 (got 1)"),
        (4, "frame_pool.when_full: Input should be 'wait' or 'drop' (got 'block')"),
        (5, "frame_pool.lease_timeout_s: Input should be greater than 0 (got 0)"),
        (7, "supervisor.heartbeat_timeout_s: Input should be a valid number (got 'fast')"),
        (8, "supervisor.restart_budget: Input should be greater than or equal to 0 (got -1)"),
        (10, "supervisor.restart_backoff_max_s: 1 is less than restart_backoff_s 5, expected at least "
             "restart_backoff_s"),
        (11, "supervisor: unknown key 'restart_windw_s', expected one of: heartbeat_timeout_s, startup_timeout_s, "
             "restart_backoff_s, restart_backoff_max_s, restart_budget, restart_window_s, drain_timeout_s; "
             "did you mean 'restart_window_s'?"),
        (13, "status.port: Input should be less than or equal to 65535 (got 70000)"),
        (14, "status.bind: Input should be a valid string (got 12)"),
    ],
    "bad_plugin.yaml": [
        (3, "cannot import plugin module 'alpr_topo_no_such_plugin': No module named 'alpr_topo_no_such_plugin', "
            "expected an importable module (installed, or on PYTHONPATH)"),
        (4, "plugins: expected a module name such as my_package.stages, got a list"),
    ],
    "env_unset.yaml": [
        (6, "environment variable ALPR_TEST_UNSET_FPS is not set, expected it set or a default as "
            "${ALPR_TEST_UNSET_FPS:-value}"),
        (8, "malformed environment reference '${ALPR_TEST_BROKEN', expected ${NAME} or ${NAME:-default}"),
    ],
    "many_mistakes.yaml": [
        (3, f"unknown key 'stagse', expected one of: {TOP_KEYS}; did you mean 'stages'?"),
        (6, "stage 'cam': unknown stage type 'source.test_patern', did you mean 'source.test_pattern'? "
            "(`alpr-topo plugins` lists every type)"),
        (9, "stage 'work': input 'cma' is not a stage, did you mean 'cam'? (stages: cam, out)"),
        (10, "stage 'work': replicas must be an integer >= 1, got 0"),
        (12, "stage 'work': parameter 'delay_ms': Input should be greater than or equal to 0 (got -1)"),
        (13, f"stage 'out': missing required parameter 'path' {JSONL_PATH}"),
    ],
}


def problems_of(call, *args) -> list[str]:
    with pytest.raises(TopologyError) as info:
        call(*args)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


def parse_problems(text: str) -> list[str]:
    return problems_of(parse, textwrap.dedent(text))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALPR_TEST_UNSET_FPS", "ALPR_TEST_UNSET_CAM", "ALPR_TEST_BROKEN", "TOPO_NAME", "FPS",
                 "CAMERA_ID", "WIDTH", "OUT_DIR", "REPLICAS"):
        monkeypatch.delenv(name, raising=False)


# -- every error kind, from fixture files ---------------------------------------------------------


def test_every_bad_fixture_is_covered() -> None:
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_bad_fixture_reports_exact_problems(fixture: str) -> None:
    path = str(BAD / fixture)
    assert problems_of(load, path) == [f"{path}:{line}: {message}" for line, message in EXPECTED[fixture]]


def test_all_mistakes_are_reported_in_one_run() -> None:
    with pytest.raises(TopologyError) as info:
        load(str(BAD / "many_mistakes.yaml"))
    assert len(info.value.problems) == 6
    assert [p.line for p in info.value.problems] == [3, 6, 9, 10, 12, 13]


def test_problem_formats_like_a_compiler() -> None:
    assert str(Problem("a.yaml", 3, "bad")) == "a.yaml:3: bad"
    error = TopologyError([Problem("a.yaml", 1, "x"), Problem("a.yaml", 2, "y")])
    assert str(error) == "a.yaml:1: x\na.yaml:2: y"


# -- inline error kinds ---------------------------------------------------------------------------


def test_missing_file() -> None:
    assert problems_of(load, "/nonexistent/topo.yaml") == [
        "/nonexistent/topo.yaml:1: cannot read the file (No such file or directory), "
        "expected a readable topology YAML file"
    ]


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert problems_of(load, str(path)) == [
        f"{path}:1: the file is not UTF-8 text (invalid continuation byte), expected a UTF-8 topology YAML file"
    ]


def test_empty_text_and_parse_default_path() -> None:
    assert parse_problems("") == [
        "<string>:1: the top level must be a mapping with at least `name` and `stages`, got an empty file"
    ]


def test_two_documents() -> None:
    assert parse_problems("name: a\n---\nname: b\n") == [
        "<string>:2: invalid YAML: expected a single document in the stream, but found another document"
    ]


def test_empty_stages() -> None:
    assert parse_problems("name: x\nstages: {}\n") == [
        "<string>:2: `stages` is empty, expected at least one stage"
    ]
    assert parse_problems("name: x\nstages:\n") == [
        "<string>:2: `stages` is empty, expected at least one stage"
    ]


def test_stages_and_stage_wrong_shape() -> None:
    assert parse_problems("name: x\nstages: [cam]\n") == [
        "<string>:2: `stages` must be a mapping of stage names to stages, got a list"
    ]
    assert parse_problems("name: x\nstages:\n  cam: source.test_pattern\n") == [
        "<string>:3: stage 'cam' must be a mapping with at least `type`, got the string 'source.test_pattern'"
    ]


def test_name_too_long_and_not_a_string() -> None:
    long = "n" * 33
    assert parse_problems(f"name: {long}\nstages:\n  cam: {{type: source.test_pattern}}\n") == [
        f"<string>:1: name '{long}' is not valid, expected 1 to 32 letters, digits, '_' or '-' "
        "(it names sockets and shared memory)"
    ]
    assert parse_problems("name: [a]\nstages:\n  cam: {type: source.test_pattern}\n") == [
        "<string>:1: `name` must be a string, got a list"
    ]


def test_duplicate_top_level_key() -> None:
    assert parse_problems("name: a\nstages:\n  cam: {type: source.test_pattern}\nname: b\n") == [
        "<string>:4: duplicate key 'name' at the top level (first defined on line 1), expected each key once"
    ]


def test_duplicate_key_inside_a_list() -> None:
    assert parse_problems("""\
        name: x
        stages:
          cam:
            type: source.test_pattern
            params:
              zones:
                - {x: 1, x: 2}
        """) == [
        "<string>:6: stage 'cam': unknown parameter 'zones', expected one of the parameters of source.test_pattern: "
        f"{PATTERN_PARAMS}",
        "<string>:7: duplicate key 'x' in stages.cam.params.zones[0] (first defined on line 7), expected each key once",
    ]


def test_params_not_a_mapping() -> None:
    assert parse_problems("""\
        name: x
        stages:
          cam:
            type: source.test_pattern
            params: [1, 2]
        """) == [
        "<string>:5: stage 'cam': `params` must be a mapping of parameter names to values, got a list"
    ]


def test_section_not_a_mapping_and_plugins_not_a_list() -> None:
    assert parse_problems("""\
        name: x
        transport: tcp
        plugins: my_plugin
        stages:
          cam: {type: source.test_pattern}
        """) == [
        "<string>:2: `transport` must be a mapping of kind, base_port, window, queue_limit, "
        "got the string 'tcp'",
        "<string>:3: `plugins` must be a list of module names, got the string 'my_plugin'",
    ]


def test_stage_host_without_hosts_section() -> None:
    assert parse_problems("""\
        name: x
        stages:
          cam:
            type: source.test_pattern
            host: edge1
        """) == [
        "<string>:5: stage 'cam': host 'edge1' is not defined, expected it named in a top-level `hosts:` "
        "section (with transport kind tcp)"
    ]


def test_two_cycles_are_reported_separately() -> None:
    assert parse_problems("""\
        name: x
        stages:
          cam: {type: source.test_pattern}
          a: {type: transform.passthrough, inputs: [b]}
          b: {type: transform.passthrough, inputs: [a]}
          c: {type: transform.passthrough, inputs: [cam, d]}
          d: {type: transform.passthrough, inputs: [c]}
        """) == [
        "<string>:4: stages form a cycle a -> b -> a, expected data to flow one way from sources to sinks",
        "<string>:6: stages form a cycle c -> d -> c, expected data to flow one way from sources to sinks",
    ]


def test_nested_parameter_error_points_at_the_key() -> None:
    assert parse_problems("""\
        name: x
        stages:
          cam:
            type: source.test_pattern
            params:
              camera_id:
                - a
        """) == [
        "<string>:6: stage 'cam': parameter 'camera_id': Input should be a valid string (got ['a'])"
    ]


# -- tcp ports ------------------------------------------------------------------------------------


def _taken_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_port_in_use(tmp_path: Path) -> None:
    with _taken_port() as sock:
        port = sock.getsockname()[1]
        # stage index 1 (work replica 0) binds base + 2 and base + 3; make base + 3 the taken port
        path = tmp_path / "tcp.yaml"
        path.write_text(textwrap.dedent(f"""\
            name: tcp
            transport: {{kind: tcp, base_port: {port - 3}}}
            stages:
              cam:
                type: source.test_pattern
              work:
                type: transform.passthrough
                inputs: [cam]
            """))
        assert problems_of(load, str(path)) == [
            f"{path}:6: port {port} for stage 'work' replica 0 is in use, expected a free port "
            "(change transport.base_port)"
        ]


def test_remote_hosts_ports_are_not_checked() -> None:
    with _taken_port() as sock:
        port = sock.getsockname()[1]
        topo = parse(textwrap.dedent(f"""\
            name: tcp
            transport: {{kind: tcp, base_port: {port - 1}}}
            hosts:
              far: 10.255.255.1
            stages:
              cam: {{type: source.test_pattern, host: far}}
              out: {{type: sink.null, inputs: [cam], host: far}}
            """))
    assert topo.hosts == {"far": "10.255.255.1"}
    assert topo.stages["cam"].host == "far"
    assert topo.transport == TransportDecl(kind="tcp", base_port=port - 1)


def test_ports_past_65535() -> None:
    assert parse_problems("""\
        name: x
        transport: {kind: tcp, base_port: 65000}
        hosts: {far: 10.255.255.1}
        stages:
          cam: {type: source.test_pattern, host: far, replicas: 300}
        """) == [
        "<string>:2: transport.base_port 65000 with 300 processes needs ports up to 65599, "
        "expected base_port + 2 x processes <= 65536"
    ]


def test_status_port_inside_the_transport_ports() -> None:
    assert parse_problems("""\
        name: x
        transport: {kind: tcp, base_port: 60000}
        hosts: {far: 10.255.255.1}
        status: {port: 60003}
        stages:
          cam: {type: source.test_pattern, host: far}
          out: {type: sink.null, inputs: [cam], host: far}
        """) == [
        "<string>:7: status.port 60003 is also the port for stage 'out' replica 0, "
        "expected a port outside the transport ports 60000..60003"
    ]


# -- good topologies ------------------------------------------------------------------------------


def test_demo_loads_with_defaults() -> None:
    path = str(GOOD / "demo.yaml")
    topo = load(path)
    assert isinstance(topo, Topology)
    assert topo.name == "demo" and topo.path == path
    assert list(topo.stages) == ["cam", "work", "out"]
    assert topo.stages["cam"] == StageDecl(
        name="cam", type="source.test_pattern", inputs=[], replicas=1, host="", line=5,
        params={"width": 1920, "height": 1080, "fps": 30.0, "count": 300, "camera_id": "test"},
    )
    assert topo.stages["work"].params == {"delay_ms": 0.0, "check_stamps": False}
    assert topo.stages["work"].replicas == 2
    assert topo.stages["out"].params == {"path": "out/frames.jsonl", "check_stamps": False}
    assert topo.transport == TransportDecl()
    assert topo.hosts == {} and topo.plugins == []
    assert topo.frame_pool == {"slots": 16, "when_full": "wait", "lease_timeout_s": 10.0}
    assert topo.supervisor == {
        "heartbeat_timeout_s": 10.0, "startup_timeout_s": 120.0, "restart_backoff_s": 0.5,
        "restart_backoff_max_s": 30.0, "restart_budget": 5, "restart_window_s": 60.0, "drain_timeout_s": 30.0,
    }
    assert topo.status == {"port": 0, "bind": "127.0.0.1"}
    assert topo.sources() == ["cam"]
    assert topo.order() == ["cam", "work", "out"]
    assert topo.outputs("cam") == ["work"] and topo.outputs("out") == []
    assert [topo.paths(n) for n in topo.order()] == [1, 1, 1]
    assert [topo.stage_index("cam", 0), topo.stage_index("work", 1), topo.stage_index("out", 0)] == [0, 2, 3]


def test_stage_index_rejects_unknown_stage_and_replica() -> None:
    topo = load(str(GOOD / "demo.yaml"))
    with pytest.raises(KeyError):
        topo.stage_index("nope", 0)
    with pytest.raises(IndexError):
        topo.stage_index("work", 2)


def test_source_feeding_two_sinks_has_two_paths() -> None:
    topo = load(str(GOOD / "fanout.yaml"))
    assert topo.outputs("cam") == ["log", "drop"]
    assert topo.paths("cam") == 2
    assert topo.paths("log") == topo.paths("drop") == 1


def test_chain_fanning_out_late() -> None:
    topo = load(str(GOOD / "chain_fanout.yaml"))
    assert topo.order() == ["cam", "work", "log", "drop"]
    assert topo.paths("cam") == 2 and topo.paths("work") == 2  # replicas do not multiply
    assert topo.stages["cam"].replicas == 2  # a source may have replicas
    assert topo.stage_index("work", 0) == 2 and topo.stage_index("drop", 0) == 6
    assert topo.transport == TransportDecl(kind="ipc", window=8, queue_limit=64)
    assert topo.frame_pool == {"slots": 32, "when_full": "drop", "lease_timeout_s": 10.0}
    assert topo.supervisor["restart_budget"] == 3 and topo.supervisor["drain_timeout_s"] == 30.0
    assert topo.status == {"port": 8080, "bind": "127.0.0.1"}


def test_fan_in_order_and_paths() -> None:
    topo = parse(textwrap.dedent("""\
        name: fanin
        stages:
          a: {type: source.test_pattern}
          b: {type: source.test_pattern}
          mix: {type: transform.passthrough, inputs: [a, b]}
          s1: {type: sink.null, inputs: [mix]}
          s2: {type: sink.null, inputs: [mix]}
          s3: {type: sink.null, inputs: [a]}
        """))
    assert topo.order() == ["a", "b", "mix", "s1", "s2", "s3"]
    assert topo.paths("a") == 3 and topo.paths("b") == 2


def test_merge_keys_and_anchors() -> None:
    topo = load(str(GOOD / "merge.yaml"))
    assert topo.stages["cam"].params["width"] == 320
    assert topo.stages["cam2"].params["width"] == 640
    assert topo.stages["cam2"].params["height"] == 240


# -- environment variables ------------------------------------------------------------------------


def test_env_defaults_and_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMERA_ID", "gate-7")
    topo = load(str(GOOD / "env.yaml"))
    assert topo.name == "envdemo"
    cam = topo.stages["cam"].params
    assert cam["fps"] == 25.0 and cam["camera_id"] == "gate-7" and cam["width"] == 800
    assert topo.stages["out"].params["path"] == "out/${kept}/{replica}.jsonl"


def test_env_values_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMERA_ID", "gate-7")
    monkeypatch.setenv("TOPO_NAME", "site-a")
    monkeypatch.setenv("FPS", "12.5")
    monkeypatch.setenv("OUT_DIR", "/data")
    topo = load(str(GOOD / "env.yaml"))
    assert topo.name == "site-a"
    assert topo.stages["cam"].params["fps"] == 12.5
    assert topo.stages["out"].params["path"] == "/data/${kept}/{replica}.jsonl"


def test_env_required_but_unset() -> None:
    path = str(GOOD / "env.yaml")
    assert problems_of(load, path) == [
        f"{path}:8: environment variable CAMERA_ID is not set, expected it set or a default as ${{CAMERA_ID:-value}}"
    ]


def test_env_substitution_resolves_plain_scalars_only(monkeypatch: pytest.MonkeyPatch) -> None:
    text = """\
        name: x
        stages:
          cam:
            type: source.test_pattern
            replicas: ${REPLICAS:-3}
          out:
            type: sink.null
            inputs: [cam]
            replicas: "${REPLICAS:-2}"
        """
    assert parse_problems(text) == ["<string>:9: stage 'out': replicas must be an integer >= 1, got '2'"]
    monkeypatch.setenv("REPLICAS", "4")
    assert parse_problems(text) == ["<string>:9: stage 'out': replicas must be an integer >= 1, got '4'"]


def test_env_in_flow_mapping_gets_a_hint() -> None:
    assert parse_problems("name: x\nstages:\n  cam: {type: source.test_pattern, replicas: ${R:-2}}\n") == [
        "<string>:3: invalid YAML: expected ',' or '}', but got '{' (while parsing a flow mapping on line 3); "
        "`${` cannot start a value inside [ ] or { }: quote it or use block style"
    ]


def test_env_in_plain_scalar_becomes_int(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICAS", "4")
    topo = parse("name: x\nstages:\n  cam:\n    type: source.test_pattern\n    replicas: ${REPLICAS}\n")
    assert topo.stages["cam"].replicas == 4


def test_env_passed_explicitly() -> None:
    topo = parse("name: ${N}\nstages:\n  cam: {type: source.test_pattern}\n", environ={"N": "pinned"})
    assert topo.name == "pinned"


def test_env_default_may_name_a_variable_and_topology_dir_is_the_files_folder(tmp_path: Path) -> None:
    sub = tmp_path / "site"
    sub.mkdir()
    path = sub / "t.yaml"
    path.write_text("name: x\nstages:\n  cam:\n    type: source.test_pattern\n"
                    "    params: {camera_id: '${CAM:-${ALPR_TOPOLOGY_DIR}/cam}'}\n")
    topo = load(str(path))
    assert topo.stages["cam"].params["camera_id"] == f"{sub}/cam"
    os_env = {"CAM": "given", "ALPR_TOPOLOGY_DIR": "/elsewhere"}
    assert parse(path.read_text(), environ=os_env).stages["cam"].params["camera_id"] == "given"
    assert parse(path.read_text(), environ={"ALPR_TOPOLOGY_DIR": "/elsewhere"}).stages["cam"].params["camera_id"] == "/elsewhere/cam"
    assert parse_problems("name: x\nstages:\n  cam:\n    type: source.test_pattern\n"
                          "    params: {camera_id: '${CAM:-${DIR'}\n") == [
        "<string>:5: malformed environment reference '${CAM:-${DIR', expected ${NAME} or ${NAME:-default}"]


# -- plugins --------------------------------------------------------------------------------------


def test_plugin_module_adds_a_stage_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "alpr_topo_test_blur.py").write_text(textwrap.dedent("""\
        from pydantic import Field
        from alpr_topo.core.stage import Stage, StageParams
        from alpr_topo.plugins.hookspecs import hookimpl

        class BlurParams(StageParams):
            radius: int = Field(3, ge=1, description="blur radius")

        class Blur(Stage):
            type_name = "test.blur"
            Params = BlurParams

        @hookimpl
        def alpr_topo_stage_types():
            return [Blur]
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        topo = parse(textwrap.dedent("""\
            name: x
            plugins: [alpr_topo_test_blur]
            stages:
              cam: {type: source.test_pattern}
              blur: {type: test.blur, inputs: [cam]}
            """))
        assert topo.plugins == ["alpr_topo_test_blur"]
        assert topo.stages["blur"].params == {"radius": 3}
    finally:
        plugin_manager().unregister(name="alpr_topo_test_blur")
        stage_types.cache_clear()
        sys.modules.pop("alpr_topo_test_blur", None)


class _RequireSink:
    """A plugin rule: every topology needs a sink.jsonl stage."""

    @hookimpl
    def alpr_topo_validate_topology(self, topology: Topology) -> list[tuple[int, str]]:
        if any(s.type == "sink.jsonl" for s in topology.stages.values()):
            return []
        first = next(iter(topology.stages.values()))
        return [(first.line, "no sink.jsonl stage, expected one to keep results")]


def test_validate_hook_problems_are_reported() -> None:
    pm = plugin_manager()
    pm.register(_RequireSink(), name="test-require-sink")
    try:
        assert parse_problems("name: x\nstages:\n  cam: {type: source.test_pattern}\n") == [
            "<string>:3: no sink.jsonl stage, expected one to keep results"
        ]
        load(str(GOOD / "demo.yaml"))  # has a sink.jsonl: passes
    finally:
        pm.unregister(name="test-require-sink")


# -- the command line -----------------------------------------------------------------------------


def test_cli_validate_bad_file() -> None:
    path = str(BAD / "cycle.yaml")
    result = CliRunner().invoke(cli, ["validate", path])
    assert result.exit_code == 1
    assert result.stderr == (
        f"{path}:5: stages form a cycle a -> b -> c -> a, expected data to flow one way from sources to sinks\n"
    )
    assert "OK" not in result.stdout


def test_cli_validate_good_file() -> None:
    path = str(GOOD / "demo.yaml")
    result = CliRunner().invoke(cli, ["validate", path])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: OK, topology 'demo' with 3 stages (4 processes)\n"


def test_cli_graph() -> None:
    result = CliRunner().invoke(cli, ["graph", "--format", "dot", str(GOOD / "fanout.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('digraph "fanout" {')
    bad = CliRunner().invoke(cli, ["graph", str(BAD / "bad_name.yaml")])
    assert bad.exit_code == 1 and "name 'my demo' is not valid" in bad.stderr
