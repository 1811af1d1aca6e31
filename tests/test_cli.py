"""The command line without a running topology: help, plugins, errors a user meets first."""

from __future__ import annotations

import json

from click.testing import CliRunner

from alpr_topo.tools.cli import cli, parse_settings


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def test_help_lists_every_contract_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("up", "down", "status", "validate", "graph", "plugins", "swap", "bench", "new-plugin", "restart"):
        assert f"  {command} " in result.output


def test_plugins_lists_builtin_types_with_parameters() -> None:
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "source.test_pattern  (source, plugin builtin)" in result.output
    assert "    fps: number, default 30.0 - frames per second; 0 = as fast as downstream takes them" in result.output
    assert "    path: string, required" in result.output
    described = {d["type"]: d for d in json.loads(invoke("plugins", "--json").output)}
    assert {"source.test_pattern", "transform.passthrough", "sink.null", "sink.jsonl"} <= set(described)
    assert described["sink.jsonl"]["required"] == ["path"]


def test_status_down_and_swap_without_a_run_say_how_to_start_one(tmp_path) -> None:
    env = {"ALPR_TOPO_RUNTIME_DIR": str(tmp_path)}
    for args in (["status"], ["down"], ["swap", "work", "--set", "delay_ms=1"]):
        result = invoke(*args, env=env)
        assert result.exit_code == 1
        assert "no run is up (start one with `alpr-topo up TOPOLOGY`)" in result.output
    result = invoke("status", "--name", "ghost", env=env)
    assert "no run named 'ghost' is up" in result.output


def test_up_reports_topology_mistakes_before_starting_anything(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  cam: {type: source.test_patern}\n")
    result = invoke("up", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:3: stage 'cam': unknown stage type 'source.test_patern', did you mean 'source.test_pattern'?" in result.output
    missing = invoke("up", str(tmp_path / "missing.yaml"))
    assert missing.exit_code == 1 and "missing.yaml:1: cannot read the file (No such file or directory)" in missing.output


def test_packaged_topologies_are_found_by_name() -> None:
    result = invoke("validate", "demo")
    assert result.exit_code == 0 and "topology 'demo' with 3 stages (4 processes)" in result.output


def test_swap_settings_are_yaml_scalars_and_may_nest() -> None:
    assert parse_settings(("delay_ms=2.5", "check_stamps=true", "name=cam-1", "a.b=3")) == {
        "delay_ms": 2.5, "check_stamps": True, "name": "cam-1", "a": {"b": 3}}
    result = invoke("swap", "work", "--set", "oops")
    assert result.exit_code == 2 and "expected key=value, got 'oops'" in result.output
