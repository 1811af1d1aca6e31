"""Plugins: the StageHarness test helper, the example plugin, and the new-plugin template.

The tests marked ``slow`` install a plugin package with pip into a temporary folder and run it
in subprocesses, as a user would: entry-point discovery only works for an installed
distribution, so importing the module from the source tree would prove nothing. They run by
default; ``-m "not slow"`` skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pydantic
import pytest
import yaml

from alpr_topo.core.framepool import SHM_DIR, StaleFrame
from alpr_topo.core.testing import HarnessError, StageHarness
from alpr_topo.stages.testing import TestPattern as PatternSource  # not "Test*": pytest would collect it
from alpr_topo.stages.testing import read_stamp, stamp_frame
from alpr_topo.tools.newplugin import PluginNameError, plugin_names, write_plugin

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "plugins" / "example"
slow = pytest.mark.slow


def shm_names(prefix: str) -> list[str]:
    return [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)] if os.path.isdir(SHM_DIR) else []


def stamped(frame_id: int, shape: tuple[int, ...] = (48, 64, 3)) -> np.ndarray:
    image = np.random.default_rng(frame_id).integers(0, 256, shape, dtype=np.uint8)
    stamp_frame(image, frame_id)
    return image


# -- StageHarness ------------------------------------------------------------------------------


def test_harness_passthrough_reads_real_shared_memory() -> None:
    with StageHarness("transform.passthrough", {"check_stamps": True}) as h:
        for i in range(40):  # more frames than slots: the harness releases as a graph would
            [out] = h.process(h.frame_envelope(stamped(i), camera_id="cam1", frame_id=i))
            segments_open = h.segments()
            assert (out.camera_id, out.frame_id) == ("cam1", i)
            assert read_stamp(h.frame(out)) == i
            assert out.stamps[-1][0] == "under_test"
        assert h.counters.get("stamp_mismatch", 0) == 0
        assert h.ctx.frames_read == 40  # the stage read each frame itself, in place
    assert segments_open and all(n.startswith(f"alpr.{h.run}.") for n in segments_open)
    assert h.segments() == []  # nothing left in /dev/shm


def test_harness_frames_are_read_only_views() -> None:
    with StageHarness("transform.passthrough") as h:
        [out] = h.process(h.frame_envelope(stamped(1)))
        frame = h.frame(out)
        assert not frame.flags.writeable
        with pytest.raises(ValueError):
            frame[0, 0, 0] = 1


def test_harness_counts_stamp_mismatches() -> None:
    with StageHarness("transform.passthrough", {"check_stamps": True}) as h:
        h.process(h.frame_envelope(stamped(5), frame_id=6))
        assert h.counters == {"stamp_mismatch": 1}


def test_harness_source_respects_finished() -> None:
    params = {"width": 32, "height": 16, "fps": 0, "count": 30}
    with StageHarness("source.test_pattern", params, name="cam") as h:
        first = h.run_source(10)
        rest = h.run_source(100)  # stops at the source's own end, not at max_frames
        assert [e.frame_id for e in first + rest] == list(range(30))
        assert h.stage.finished
        assert h.run_source(5) == []
        assert [read_stamp(h.frame(e)) for e in rest[-5:]] == list(range(25, 30))
        assert h.frame(rest[-1]).shape == (16, 32, 3)
        with pytest.raises(StaleFrame):  # its slot was reused for a later frame long ago
            h.frame(first[0])
    assert h.segments() == []


def test_harness_source_paced_by_wait_s() -> None:
    with StageHarness(PatternSource, {"width": 16, "height": 8, "fps": 200, "count": 4}) as h:
        assert len(h.run_source(10)) == 4


def test_harness_validates_params_with_the_stage_schema() -> None:
    with pytest.raises(pydantic.ValidationError):
        StageHarness("transform.passthrough", {"delay_ms": -1})
    with pytest.raises(pydantic.ValidationError):
        StageHarness("transform.passthrough", {"delay": 1})  # unknown key
    with pytest.raises(pydantic.ValidationError):
        StageHarness("sink.jsonl")  # path is required


def test_harness_unknown_type_names_close_matches() -> None:
    with pytest.raises(KeyError, match="transform.passthrough"):
        StageHarness("transform.passthru")


def test_harness_sink_and_teardown(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with StageHarness("sink.jsonl", {"path": str(path), "check_stamps": True}) as h:
        for i in range(3):
            assert h.process(h.frame_envelope(stamped(i), frame_id=i)) == []
    lines = [json.loads(line) for line in path.read_text().splitlines()]  # teardown closed the file
    assert [(r["frame_id"], r["stamp"]) for r in lines] == [(0, 0), (1, 1), (2, 2)]


def test_harness_catches_what_the_runtime_would_punish() -> None:
    from alpr_topo.core.envelope import Envelope
    from alpr_topo.core.stage import Stage

    class NumpyMeta(Stage):
        type_name = "test.numpy_meta"

        def process(self, env: Envelope) -> Envelope:
            env.meta["mean"] = np.float32(1.5)  # msgpack cannot carry numpy scalars
            return env

    class Twice(Stage):
        type_name = "test.twice"

        def process(self, env: Envelope) -> list[Envelope]:
            return [env, env.derive()]  # both carry the input frame

    with StageHarness(NumpyMeta) as h:
        with pytest.raises(HarnessError, match="cannot cross"):
            h.process(h.frame_envelope(stamped(0)))
    with StageHarness(Twice) as h:
        with pytest.raises(HarnessError, match="one output only"):
            h.process(h.frame_envelope(stamped(0)))
    with StageHarness("source.test_pattern") as h:
        with pytest.raises(HarnessError, match="run_source"):
            h.process(h.frame_envelope(stamped(0)))


def test_harness_cleans_up_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError):
        with StageHarness("transform.passthrough") as h:
            h.process(h.frame_envelope(stamped(0)))
            raise RuntimeError("boom")
    assert h.segments() == []


# -- the example plugin, in-process ------------------------------------------------------------


@pytest.fixture
def example_plugin(monkeypatch: pytest.MonkeyPatch):
    """The example's module imported from the source tree (enough for the harness, not for entry points)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from alpr_topo_example import plugin

    return plugin


def test_example_brightness_measures_and_drops(example_plugin) -> None:
    with StageHarness(example_plugin.Brightness, {"min_brightness": 60, "sample_step": 1}) as h:
        [light] = h.process(h.frame_envelope(np.full((48, 64, 3), 120, np.uint8), frame_id=1))
        assert light.meta["brightness"] == pytest.approx(120.0)
        assert h.process(h.frame_envelope(np.full((48, 64, 3), 20, np.uint8), frame_id=2)) == []
        assert h.counters == {"dark_dropped": 1}


def test_example_brightness_on_test_pattern(example_plugin) -> None:
    with StageHarness("source.test_pattern", {"width": 64, "height": 48, "fps": 0, "count": 3}) as src:
        frames = [np.array(src.frame(e)) for e in src.run_source(3)]
    with StageHarness(example_plugin.Brightness) as h:
        outs = [h.process(h.frame_envelope(f, frame_id=i))[0] for i, f in enumerate(frames)]
    assert all(90 < e.meta["brightness"] < 160 for e in outs)


def test_example_grayscale_makes_a_frame_in_its_own_pool(example_plugin) -> None:
    with StageHarness(example_plugin.Grayscale, name="gray") as h:
        outs = [h.process(h.frame_envelope(stamped(i), frame_id=i))[0] for i in range(40)]
        assert h.frame(outs[-1]).shape == (48, 64)
        assert outs[-1].frame.pool.startswith(f"alpr.{h.run}.gray.")
        with pytest.raises(StaleFrame):
            h.frame(outs[0])  # released to make room, as a sink would have


# -- installed plugins: entry points, their own tests, a real topology --------------------------


def pip_install(src: Path, work: Path) -> Path:
    """Install the package at ``src`` into ``work/site`` (copied first: pip builds in the tree)."""
    copy = work / "src" / src.name
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "out"))
    target = work / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(copy)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def with_path(site: Path, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that sees ``site`` first (and no plugins named by env var)."""
    env = {k: v for k, v in os.environ.items() if k != "ALPR_TOPO_PLUGINS"}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return env


def run_py(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def discovered(site: Path, cwd: Path, type_name: str, module: str) -> None:
    """In a fresh interpreter, the stage type is found, from the installed copy of ``module``."""
    code = (
        "import json, %s as m; from alpr_topo.core.plugins import stage_types, plugin_of; "
        "print(json.dumps({'types': list(stage_types()), 'file': m.__file__, 'plugin': plugin_of(%r)}))"
        % (module, type_name)
    )
    proc = run_py(["-c", code], with_path(site), cwd)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert type_name in found["types"]
    assert "source.test_pattern" in found["types"]  # the built-ins are still there
    assert found["file"].startswith(str(site))  # the installed package, not the source tree
    assert found["plugin"] != "builtin"


def run_topology(spec: dict, site: Path, work: Path) -> tuple[list[dict], str]:
    """``alpr-topo up FILE --duration 60``; the supervisor stops once the finite source drained."""
    topo = work / "topology.yaml"
    topo.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = run_py(["-m", "alpr_topo.tools.cli", "up", str(topo), "--duration", "60"], with_path(site), work, timeout=120)
    output = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert shm_names(f"alpr.{spec['name']}.") == [], output
    sink = Path(spec["stages"]["out"]["params"]["path"])
    assert sink.exists(), output
    return [json.loads(line) for line in sink.read_text().splitlines()], output


def short_name(prefix: str) -> str:
    """A topology name unique per test run (it names the run's sockets and segments)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pip_install(EXAMPLE, tmp_path_factory.mktemp("example"))


@slow
def test_example_found_through_entry_point(example_site: Path, tmp_path: Path) -> None:
    discovered(example_site, tmp_path, "example.brightness", "alpr_topo_example")


@slow
def test_example_own_tests_pass_against_installed_package(example_site: Path) -> None:
    proc = run_py(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")], with_path(example_site), REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 passed" in proc.stdout, proc.stdout


@slow
def test_example_found_through_env_var_without_install(tmp_path: Path) -> None:
    env = with_path(EXAMPLE, ALPR_TOPO_PLUGINS="alpr_topo_example.plugin")
    code = "from alpr_topo.core.plugins import stage_types; print(sorted(stage_types()))"
    proc = run_py(["-c", code], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "example.brightness" in proc.stdout and "example.grayscale" in proc.stdout


@slow
def test_example_runs_inside_a_topology(example_site: Path, tmp_path: Path) -> None:
    """Needs ``alpr-topo up``: source.test_pattern -> example.brightness -> sink.jsonl."""
    spec = {
        "name": short_name("plug"),
        "stages": {
            "cam": {"type": "source.test_pattern", "params": {"width": 64, "height": 48, "fps": 0, "count": 30}},
            "bright": {"type": "example.brightness", "inputs": ["cam"], "params": {"min_brightness": 10}},
            "out": {"type": "sink.jsonl", "inputs": ["bright"], "params": {"path": str(tmp_path / "out.jsonl")}},
        },
    }
    records, output = run_topology(spec, example_site, tmp_path)
    assert len(records) == 30, output
    assert sorted(r["frame_id"] for r in records) == list(range(30))
    assert all(90 < r["meta"]["brightness"] < 160 for r in records), records[0]
    assert all(r["stages"][:2] == ["cam", "bright"] for r in records), records[0]


# -- alpr-topo new-plugin ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "Acme", "acme_blur", "1acme", "acme--blur", "acme-", "-acme", "ac me", "acmé"])
def test_new_plugin_rejects_bad_names(bad: str, tmp_path: Path) -> None:
    with pytest.raises(PluginNameError, match="lowercase letters, digits and dashes"):
        write_plugin(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_new_plugin_names() -> None:
    names = plugin_names("acme-blur2")
    assert names["dist"] == "alpr-topo-acme-blur2"
    assert names["module"] == "alpr_topo_acme_blur2"
    assert names["stage_type"] == "acme_blur2.example"
    assert names["class_name"] == "AcmeBlur2Stage"
    assert plugin_names("alpr-topo-acme")["module"] == "alpr_topo_acme"  # the prefix is not doubled
    assert len(plugin_names("a" * 40)["topology_name"]) <= 32  # the loader's limit for `name:`


def test_new_plugin_writes_every_file(tmp_path: Path) -> None:
    root = write_plugin("acme-blur", tmp_path)
    assert root == tmp_path / "acme-blur"
    for rel in ["pyproject.toml", "README.md", ".gitignore", "topology.yaml", "alpr_topo_acme_blur/__init__.py",
                "alpr_topo_acme_blur/plugin.py", "tests/test_alpr_topo_acme_blur.py"]:
        assert (root / rel).is_file(), rel
    text = "".join(p.read_text() for p in root.rglob("*") if p.is_file())
    assert "${" not in text  # every placeholder was filled
    pyproject = (root / "pyproject.toml").read_text()
    assert '"alpr_topo.plugins"' in pyproject and "alpr_topo_acme_blur.plugin" in pyproject
    for rel in ["alpr_topo_acme_blur/plugin.py", "tests/test_alpr_topo_acme_blur.py"]:
        compile((root / rel).read_text(), rel, "exec")
    topo = yaml.safe_load((root / "topology.yaml").read_text())
    assert [s["type"] for s in topo["stages"].values()] == ["source.test_pattern", "acme_blur.example", "sink.jsonl"]
    readme = (root / "README.md").read_text()
    assert "pip install -e ." in readme and "pytest" in readme and "acme_blur.example" in readme


def test_new_plugin_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    root = write_plugin("acme", tmp_path)
    (root / "README.md").write_text("mine")
    (root / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="--force"):
        write_plugin("acme", tmp_path)
    assert (root / "README.md").read_text() == "mine"
    write_plugin("acme", tmp_path, force=True)
    assert "alpr-topo-acme" in (root / "README.md").read_text()
    assert (root / "notes.txt").read_text() == "keep"


def test_new_plugin_stage_runs_in_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_plugin("harness-check", tmp_path)
    monkeypatch.syspath_prepend(str(root))
    from alpr_topo_harness_check.plugin import HarnessCheckStage

    with StageHarness(HarnessCheckStage, {"label": "x", "sample_step": 1}) as h:
        [out] = h.process(h.frame_envelope(np.full((8, 8, 3), 7, np.uint8)))
    assert out.meta["harness_check"] == {"label": "x", "mean": 7.0}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A plugin written by new-plugin and installed: (its folder, the install target)."""
    work = tmp_path_factory.mktemp("generated")
    root = write_plugin("gen-check", work / "dest")
    return root, pip_install(root, work)


@slow
def test_generated_plugin_installs_and_passes_its_tests(generated: tuple[Path, Path]) -> None:
    root, site = generated
    discovered(site, root.parent, "gen_check.example", "alpr_topo_gen_check")
    # Run from outside the folder, so the tests import the installed copy, not the sources.
    proc = run_py(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")], with_path(site), root.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout, proc.stdout  # including the entry-point test, not skipped


@slow
def test_generated_plugin_topology_runs(generated: tuple[Path, Path], tmp_path: Path) -> None:
    """Needs ``alpr-topo up``: the generated topology.yaml, with its sink moved into tmp_path."""
    root, site = generated
    spec = yaml.safe_load((root / "topology.yaml").read_text())
    spec["name"] = short_name("gen")
    spec["stages"]["out"]["params"]["path"] = str(tmp_path / "gen.jsonl")
    records, output = run_topology(spec, site, tmp_path)
    assert len(records) == 30, output
    assert all(r["meta"]["gen_check"]["label"] == "demo" for r in records), records[0]
    assert all(isinstance(r["meta"]["gen_check"]["mean"], float) for r in records), records[0]
