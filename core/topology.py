"""Load a topology YAML file into a checked :class:`Topology`, or report every mistake in it.

A topology is read once, before any process starts, so this is the place to be strict: every
problem found is reported as ``FILE:LINE: what is wrong, what was expected`` and all of them
are collected before one :class:`TopologyError` is raised, so a user fixes a file in one round
instead of one error per run.

The file is parsed with PyYAML's node API (``yaml.compose``) rather than ``safe_load`` because
nodes keep their line numbers and their duplicate keys (``safe_load`` silently keeps the last
of two equal keys, which hides typos such as a stage defined twice).
"""

from __future__ import annotations

import difflib
import errno
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .plugins import PluginError, load_modules, plugin_manager, stage_types
from .stage import Stage

#: The topology name names sockets and shared-memory segments, so it must be short and plain.
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
STAGE_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
TOP_KEYS = ("name", "description", "stages", "transport", "hosts", "frame_pool", "plugins", "supervisor", "status")
STAGE_KEYS = ("type", "params", "inputs", "replicas", "host")
#: ``$${`` is a literal ``${``; otherwise ``${NAME}`` or ``${NAME:-default}``, where the default
#: may itself hold ``${NAME}`` references (``${RULES:-${ALPR_TOPOLOGY_DIR}/rules.yaml}``).
ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:\$\{[A-Za-z_][A-Za-z0-9_]*\}|[^}])*))?\}")
MERGE_TAG = "tag:yaml.org,2002:merge"
NULL_TAG = "tag:yaml.org,2002:null"
MAX_PORT = 65535


# -- public data ---------------------------------------------------------------------------------


@dataclass
class Problem:
    """One mistake in a topology file, printed the way compilers do so editors can jump to it."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class TopologyError(Exception):
    """A topology could not be loaded; ``problems`` holds every mistake found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class StageDecl:
    """One stage as declared in the file, with its parameters validated and defaults filled in."""

    name: str
    type: str
    params: dict
    inputs: list[str]
    replicas: int = 1
    host: str = ""
    line: int = 0


@dataclass
class TransportDecl:
    """How stages talk: ``ipc`` sockets on one machine, or ``tcp`` across hosts."""

    kind: str = "ipc"
    base_port: int = 5550
    window: int = 4
    queue_limit: int = 32


@dataclass
class Topology:
    """A loaded, checked topology: the stage graph plus the runtime sections with defaults."""

    name: str
    path: str
    stages: dict[str, StageDecl]
    transport: TransportDecl = field(default_factory=TransportDecl)
    hosts: dict[str, str] = field(default_factory=dict)
    frame_pool: dict = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    supervisor: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)

    def outputs(self, name: str) -> list[str]:
        """Downstream stages of ``name`` (those listing it in ``inputs``), in file order."""
        return [s.name for s in self.stages.values() if name in s.inputs]

    def ancestors(self, name: str) -> list[str]:
        """Every stage upstream of ``name``, however far."""
        seen: list[str] = []
        todo = list(self.stages[name].inputs)
        while todo:
            up = todo.pop()
            if up not in seen and up in self.stages:
                seen.append(up)
                todo.extend(self.stages[up].inputs)
        return seen

    def sources(self) -> list[str]:
        """Stages without inputs, where envelopes are made."""
        return [s.name for s in self.stages.values() if not s.inputs]

    def order(self) -> list[str]:
        """Stages in topological order, sources first; ties keep file order so output is stable."""
        pending = {name: len([i for i in s.inputs if i in self.stages]) for name, s in self.stages.items()}
        done: list[str] = []
        ready = [name for name, n in pending.items() if n == 0]
        while ready:
            name = ready.pop(0)
            done.append(name)
            for down in self.outputs(name):
                pending[down] -= 1
                if pending[down] == 0:
                    ready.append(down)
            ready.sort(key=list(self.stages).index)
        return done

    def paths(self, name: str) -> int:
        """Distinct paths from ``name`` to a graph end: fan-out multiplies, replicas do not.

        An envelope sent by ``name`` is finished once every path has consumed it, which is what
        a frame slot's reference count must cover.
        """
        memo: dict[str, int] = {}

        def count(stage: str, upstream: frozenset[str]) -> int:
            if stage not in memo:  # memoised: a chain of diamonds must not take exponential time
                outs = [d for d in self.outputs(stage) if d not in upstream]  # a cycle cannot loop
                memo[stage] = sum(count(d, upstream | {stage}) for d in outs) if outs else 1
            return memo[stage]

        return count(name, frozenset())

    def stage_index(self, name: str, replica: int) -> int:
        """Stable index of one (stage, replica) over all stages in file order, replicas expanded.

        TCP ports are derived from it (``base_port + 2 * index + parity``), so every process of
        a run, on any host, computes the same port for the same instance without talking.
        """
        index = 0
        for stage in self.stages.values():
            if stage.name == name:
                if not 0 <= replica < stage.replicas:
                    raise IndexError(f"stage {name!r} has {stage.replicas} replicas, not replica {replica}")
                return index + replica
            index += stage.replicas
        raise KeyError(name)

    def process_count(self) -> int:
        """Processes the run starts for stages: the sum of all replicas."""
        return sum(s.replicas for s in self.stages.values())


# -- schemas of the runtime sections ------------------------------------------------------------


class _Section(BaseModel):
    """Strict: a YAML ``"8"`` or ``true`` where a number belongs is a mistake worth reporting."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TransportSection(_Section):
    kind: Literal["ipc", "tcp"] = Field("ipc", description="ipc on one machine, tcp across hosts")
    base_port: int = Field(5550, ge=1024, le=65000, description="tcp: first port; two per stage replica")
    window: int = Field(4, ge=1, description="credits per link: envelopes in flight per receiver")
    queue_limit: int = Field(32, ge=1, description="envelopes queued per downstream group")


class FramePoolSection(_Section):
    slots: int = Field(16, ge=2, description="shared-memory frame slots per producing stage")
    when_full: Literal["wait", "drop"] = Field("wait", description="wait for a free slot, or drop the frame")
    lease_timeout_s: float = Field(10.0, gt=0, description="reclaim a slot a consumer held this long")


class SupervisorSection(_Section):
    heartbeat_timeout_s: float = Field(10.0, gt=0)
    startup_timeout_s: float = Field(120.0, gt=0)
    restart_backoff_s: float = Field(0.5, ge=0)
    restart_backoff_max_s: float = Field(30.0, ge=0)
    restart_budget: int = Field(5, ge=0)
    restart_window_s: float = Field(60.0, gt=0)
    drain_timeout_s: float = Field(30.0, gt=0)


class StatusSection(_Section):
    port: int = Field(0, ge=0, le=MAX_PORT, description="status page and /metrics port; 0 = the default (8480 or the next free port; `up --status-port 0` turns the page off)")
    bind: str = Field("127.0.0.1", min_length=1, description="address the status page listens on")


# -- small helpers ------------------------------------------------------------------------------


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _quoted(names: Iterable[str]) -> str:
    return " or ".join(repr(n) for n in names)


def _close(word: str, choices: Iterable[str]) -> list[str]:
    """The closest name only: one confident suggestion reads better than a list of guesses."""
    return difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)


def _what(value: Any) -> str:
    """Say what a value is, for "got ..." parts of messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    """A short rendering of a rejected value, written the way it would look in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(key: str, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    message = f"unknown key {key!r}, expected one of: {', '.join(allowed)}"
    close = _close(key, allowed)
    return message + (f"; did you mean {_quoted(close)}?" if close else "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@lru_cache(maxsize=1)
def _local_addresses() -> frozenset[str]:
    """Addresses of this machine's interfaces (to know which hosts' ports we can check)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return frozenset()
    found = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                found.add(addr.address.split("%")[0])
    return frozenset(found)


def is_local_address(address: str) -> bool:
    """True for loopback, wildcard, this machine's host name and its interface addresses.

    Names other than ``localhost`` and our own host name are not resolved: a slow or absent DNS
    must not make validation hang, and a remote host's ports cannot be checked from here anyway.
    """
    if address in ("localhost", socket.gethostname()):
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified or address in _local_addresses()


def port_in_use(address: str, port: int) -> OSError | None:
    """Try to bind ``address:port`` briefly (no SO_REUSEADDR); the error if that fails."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        sock.bind((address, port))
    except OSError as exc:
        return exc
    finally:
        sock.close()
    return None


# -- the loader ---------------------------------------------------------------------------------


Pairs = dict[str, tuple[yaml.Node, yaml.Node]]


class _Loader:
    """One pass over one file; collects problems instead of stopping at the first."""

    def __init__(self, path: str, host: str | None = None) -> None:
        self.path = path
        self.host = host  # check only the ports this host's supervisor will bind
        self.problems: list[Problem] = []
        self.constructor = yaml.SafeLoader("")  # resolves and constructs plain Python values
        self.types: dict[str, type[Stage]] | None = None
        self.classes: dict[str, type[Stage] | None] = {}
        self.stage_keys: dict[str, Pairs] = {}
        self.input_nodes: dict[str, list[tuple[str, yaml.Node]]] = {}
        self.bad_inputs: set[str] = set()  # stages whose `inputs` was unreadable (no "has no inputs")
        self.broken: set[int] = set()  # scalars with an unset environment variable

    # problems ------------------------------------------------------------------------------

    def add(self, where: yaml.Node | int, message: str) -> None:
        """Record a problem; none about a value whose environment variable was missing.

        That value still holds the literal ``${NAME}``, so any further complaint about it
        (not a number, not a valid name, ...) would only repeat the real problem.
        """
        if not isinstance(where, int) and id(where) in self.broken:
            return
        line = where if isinstance(where, int) else _line(where)
        self.problems.append(Problem(self.path, line, message))

    def fail(self) -> TopologyError:
        """The error to raise: problems in line order, exact repeats (from aliases) once."""
        unique: list[Problem] = []
        for problem in self.problems:
            if problem not in unique:
                unique.append(problem)
        return TopologyError(sorted(unique, key=lambda p: p.line))

    # YAML ----------------------------------------------------------------------------------

    def compose(self, text: str) -> yaml.Node | None:
        """Parse to nodes; a syntax error ends loading at once (nothing after it is reliable)."""
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            message = f"invalid YAML: {exc.problem or exc.context}"
            if exc.context and exc.problem and (exc.problem or "").startswith("but "):
                message = f"invalid YAML: {exc.context}, {exc.problem}"  # "expected X, but found Y"
            elif exc.context and exc.problem and exc.context_mark is not None:
                message += f" ({exc.context} on line {exc.context_mark.line + 1})"
            if mark is not None and "${" in (text.splitlines()[mark.line:mark.line + 1] or [""])[0]:
                message += "; `${` cannot start a value inside [ ] or { }: quote it or use block style"
            self.add(mark.line + 1 if mark else 1, message)
        except yaml.reader.ReaderError as exc:
            self.add(text.count("\n", 0, max(exc.position, 0)) + 1,
                     f"invalid YAML: {exc.reason} (character {exc.character!r}), expected printable UTF-8 text")
        except yaml.YAMLError as exc:
            self.add(1, f"invalid YAML: {exc}")
        raise self.fail()

    def walk(self, root: yaml.Node) -> Iterator[yaml.Node]:
        """Every node once, even when aliases make the tree a graph."""
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            yield node
            if isinstance(node, yaml.MappingNode):
                for key, value in reversed(node.value):
                    stack.extend((value, key))
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(reversed(node.value))

    def substitute_env(self, root: yaml.Node, environ: dict[str, str]) -> None:
        """Replace ``${NAME}`` / ``${NAME:-default}`` in every scalar, then re-resolve its type.

        Substituting on nodes, before construction, lets ``fps: ${FPS:-30}`` become the integer
        30 exactly as if ``30`` had been written; quoted scalars stay strings.
        """
        for node in self.walk(root):
            if isinstance(node, yaml.ScalarNode) and "$" in node.value:
                value = self._expand(node, environ)
                if value != node.value:
                    node.value = value
                    if node.style is None:  # plain scalar: its type comes from its text
                        node.tag = self.constructor.resolve(yaml.ScalarNode, value, (True, False))

    def _expand(self, node: yaml.ScalarNode, environ: dict[str, str], text: str | None = None) -> str:
        out: list[str] = []
        last = 0
        text = node.value if text is None else text
        for match in ENV_RE.finditer(text):
            self._check_malformed(node, text[last:match.start()])
            out.append(text[last:match.start()])
            last = match.end()
            if match.group(0) == "$${":
                out.append("${")
                continue
            name, default = match.group(1), match.group(2)
            if name in environ:
                out.append(environ[name])
            elif default is not None:
                out.append(self._expand(node, environ, default))
            else:
                self.add(node, f"environment variable {name} is not set, "
                               f"expected it set or a default as ${{{name}:-value}}")
                self.broken.add(id(node))
                out.append(match.group(0))
        self._check_malformed(node, text[last:])
        return "".join(out) + text[last:]

    def _check_malformed(self, node: yaml.Node, segment: str) -> None:
        if "${" in segment:
            bad = segment[segment.index("${"):]
            self.add(node, f"malformed environment reference {bad!r}, expected ${{NAME}} or ${{NAME:-default}}")
            self.broken.add(id(node))

    def value(self, node: yaml.Node) -> tuple[bool, Any]:
        """The plain Python value of a node; ``(False, None)`` after reporting why it has none."""
        try:
            return True, self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.add(node, f"cannot read this value: {problem}, expected plain YAML scalars, lists and mappings")
            return False, None

    def text(self, node: yaml.Node) -> str | None:
        """The text of a non-null scalar (so ``name: 2024`` still names something), else None."""
        if isinstance(node, yaml.ScalarNode) and node.tag != NULL_TAG:
            return node.value
        return None

    def is_broken(self, node: yaml.Node) -> bool:
        """Whether a value (or anything inside it) had an unset environment variable."""
        return bool(self.broken) and any(id(n) in self.broken for n in self.walk(node))

    def describe(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        ok, value = self.value(node)
        return _what(value) if ok else "an unreadable value"

    def pairs(self, node: yaml.MappingNode) -> Pairs:
        """Keys of a mapping with their key and value nodes, in file order.

        ``<<`` merges are expanded (explicit keys win); of duplicate keys the first is kept,
        the duplicates themselves are reported by :meth:`check_duplicates`.
        """
        explicit = {self.text(k) or "" for k, _ in node.value if k.tag != MERGE_TAG}
        found: Pairs = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                for key, pair in self._merged(value_node).items():
                    if key not in explicit and key not in found:
                        found[key] = pair
                continue
            key = self.text(key_node)
            if key is None:
                self.add(key_node, f"keys must be plain names, got {self.describe(key_node)}")
            elif key not in found:
                found[key] = (key_node, value_node)
        return found

    def _merged(self, node: yaml.Node) -> Pairs:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: Pairs = {}
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.add(source, f"`<<` merges mappings, got {self.describe(source)}, expected an alias of a mapping")
                continue
            for key, pair in self.pairs(source).items():
                merged.setdefault(key, pair)  # earlier sources win, as YAML specifies
        return merged

    def check_duplicates(self, root: yaml.Node, stages_node: yaml.Node | None) -> None:
        """Report keys given twice in any mapping; YAML itself would silently keep the last."""
        paths = {id(root): ""}
        for node in self.walk(root):
            where = paths.get(id(node), "")
            if isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    paths.setdefault(id(item), f"{where}[{i}]")
            if not isinstance(node, yaml.MappingNode):
                continue
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = self.text(key_node)
                if key is None or key_node.tag == MERGE_TAG:
                    continue
                paths.setdefault(id(value_node), f"{where}.{key}" if where else key)
                if key not in first:
                    first[key] = _line(key_node)
                elif node is stages_node:
                    self.add(key_node, f"duplicate stage name {key!r} (first defined on line {first[key]}), "
                                       "expected each stage name once")
                else:
                    place = f"in {where}" if where else "at the top level"
                    self.add(key_node, f"duplicate key {key!r} {place} (first defined on line {first[key]}), "
                                       "expected each key once")

    # the whole file ------------------------------------------------------------------------

    def run(self, text: str, environ: dict[str, str]) -> Topology:
        root = self.compose(text)
        if not isinstance(root, yaml.MappingNode):
            got = "an empty file" if root is None else self.describe(root)
            self.add(root if root is not None else 1,
                     f"the top level must be a mapping with at least `name` and `stages`, got {got}")
            raise self.fail()
        # ALPR_TOPOLOGY_DIR: the topology file's folder, so a topology can name files beside it
        # (rules, regions) whatever folder `alpr-topo up` runs in; the environment may override it.
        here = {"ALPR_TOPOLOGY_DIR": str(Path(self.path).resolve().parent)} if self.path and self.path != "<string>" else {}
        self.substitute_env(root, {**here, **environ})
        top = self.pairs(root)
        self.check_duplicates(root, top["stages"][1] if "stages" in top else None)
        for key, (key_node, _) in top.items():
            if key not in TOP_KEYS:
                self.add(key_node, _unknown_key(key, TOP_KEYS))

        plugins = self.load_plugins(top.get("plugins"))
        name = self.read_name(top.get("name"))
        self.read_description(top.get("description"))
        transport = TransportDecl(**self.section("transport", top.get("transport"), TransportSection))
        hosts = self.read_hosts(top.get("hosts"), transport)
        frame_pool = self.section("frame_pool", top.get("frame_pool"), FramePoolSection)
        supervisor = self.read_supervisor(top.get("supervisor"))
        status = self.section("status", top.get("status"), StatusSection)
        stages = self.read_stages(top.get("stages"), hosts)

        topo = Topology(name=name, path=self.path, stages=stages, transport=transport, hosts=hosts,
                        frame_pool=frame_pool, plugins=plugins, supervisor=supervisor, status=status)
        self.check_graph(topo)
        self.check_ports(topo, top.get("transport"))
        if not self.problems:
            self.plugin_checks(topo)
        if self.problems:
            raise self.fail()
        return topo

    # top-level keys ------------------------------------------------------------------------

    def load_plugins(self, pair: tuple[yaml.Node, yaml.Node] | None) -> list[str]:
        """Import the listed plugin modules first: their stage types are checked below."""
        modules: list[str] = []
        if pair is not None:
            key_node, node = pair
            if isinstance(node, yaml.SequenceNode):
                for item in node.value:
                    module = self.text(item) if isinstance(item, yaml.ScalarNode) else None
                    if not module:
                        self.add(item, f"plugins: expected a module name such as my_package.stages, "
                                       f"got {self.describe(item)}")
                    elif self._import_plugin(item, module):
                        modules.append(module)
            elif self.text(node) is not None or not isinstance(node, yaml.ScalarNode):
                self.add(node, f"`plugins` must be a list of module names, got {self.describe(node)}")
        try:
            self.types = stage_types()
        except PluginError as exc:
            self.add(pair[0] if pair is not None else 1, f"{exc}, expected every stage type to come from one plugin")
        except Exception as exc:  # a plugin's alpr_topo_stage_types hook that crashes
            self.add(pair[0] if pair is not None else 1,
                     f"listing stage types failed: {type(exc).__name__}: {exc}, expected plugins that load cleanly")
        return modules

    def _import_plugin(self, node: yaml.Node, module: str) -> bool:
        try:
            load_modules([module])
        except PluginError as exc:
            self.add(node, f"{exc}, expected an importable module (installed, or on PYTHONPATH)")
            return False
        except Exception as exc:  # a plugin that raises while importing must not crash validation
            self.add(node, f"plugin module {module!r} failed while importing: {type(exc).__name__}: {exc}, "
                           "expected it to import cleanly")
            return False
        return True

    def read_name(self, pair: tuple[yaml.Node, yaml.Node] | None) -> str:
        if pair is None:
            self.add(1, "missing `name`, expected a topology name such as `name: demo`")
            return ""
        name = self.text(pair[1])
        if name is None:
            self.add(pair[1], f"`name` must be a string, got {self.describe(pair[1])}")
            return ""
        if not NAME_RE.fullmatch(name):
            self.add(pair[1], f"name {name!r} is not valid, expected 1 to 32 letters, digits, '_' or '-' "
                              "(it names sockets and shared memory)")
        return name

    def read_description(self, pair: tuple[yaml.Node, yaml.Node] | None) -> None:
        if pair is not None and not isinstance(pair[1], yaml.ScalarNode):
            self.add(pair[1], f"`description` must be a string, got {self.describe(pair[1])}")

    def section(self, title: str, pair: tuple[yaml.Node, yaml.Node] | None, model: type[BaseModel]) -> dict:
        """Validate one runtime section against its schema; defaults for whatever is left out."""
        defaults = model().model_dump()
        if pair is None:
            return defaults
        node = pair[1]
        if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG:
            return defaults
        if not isinstance(node, yaml.MappingNode):
            self.add(node, f"`{title}` must be a mapping of {', '.join(model.model_fields)}, "
                           f"got {self.describe(node)}")
            return defaults
        keys = self.pairs(node)
        raw: dict[str, Any] = {}
        for key, (key_node, value_node) in keys.items():
            if key not in model.model_fields:
                self.add(key_node, f"{title}: {_unknown_key(key, model.model_fields)}")
                continue
            ok, value = self.value(value_node)
            if ok:
                raw[key] = value
        try:
            return {**defaults, **model.model_validate(raw).model_dump()}
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                field_name = str(error["loc"][0]) if error["loc"] else ""
                if field_name in keys and self.is_broken(keys[field_name][1]):
                    continue
                where = keys[field_name][0] if field_name in keys else pair[0]
                self.add(where, f"{title}.{field_name}: {error['msg']} (got {_show(error.get('input'))})")
            good = {k: v for k, v in raw.items() if k not in {str(e["loc"][0]) for e in exc.errors() if e["loc"]}}
            return {**defaults, **good}

    def read_supervisor(self, pair: tuple[yaml.Node, yaml.Node] | None) -> dict:
        values = self.section("supervisor", pair, SupervisorSection)
        if values["restart_backoff_max_s"] < values["restart_backoff_s"]:
            node = pair[1] if pair is not None else 1
            if isinstance(node, yaml.MappingNode):
                node = self.pairs(node).get("restart_backoff_max_s", (node,))[0]
            self.add(node, f"supervisor.restart_backoff_max_s: {values['restart_backoff_max_s']} is less than "
                           f"restart_backoff_s {values['restart_backoff_s']}, expected at least restart_backoff_s")
        return values

    def read_hosts(self, pair: tuple[yaml.Node, yaml.Node] | None, transport: TransportDecl) -> dict[str, str]:
        if pair is None:
            return {}
        key_node, node = pair
        if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG:
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.add(node, f"`hosts` must be a mapping of host names to addresses, got {self.describe(node)}")
            return {}
        if transport.kind != "tcp":
            self.add(key_node, "hosts need transport kind tcp, expected `transport: {kind: tcp}` "
                               "or no `hosts:` section")
        hosts: dict[str, str] = {}
        for host, (_, value_node) in self.pairs(node).items():
            address = self.text(value_node)
            if not address or not isinstance(value_node, yaml.ScalarNode):
                self.add(value_node, f"hosts.{host}: expected an address such as 10.0.0.5 or edge1.local, "
                                     f"got {self.describe(value_node)}")
                continue
            hosts[host] = address
        return hosts

    # stages --------------------------------------------------------------------------------

    def read_stages(self, pair: tuple[yaml.Node, yaml.Node] | None, hosts: dict[str, str]) -> dict[str, StageDecl]:
        if pair is None:
            self.add(1, "missing `stages`, expected a mapping of stage names to stages")
            return {}
        key_node, node = pair
        if not isinstance(node, yaml.MappingNode):
            if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG:
                self.add(key_node, "`stages` is empty, expected at least one stage")
            else:
                self.add(node, f"`stages` must be a mapping of stage names to stages, got {self.describe(node)}")
            return {}
        entries = self.pairs(node)
        if not entries:
            self.add(key_node, "`stages` is empty, expected at least one stage")
        return {name: self.read_stage(name, k, v, hosts) for name, (k, v) in entries.items()}

    def read_stage(self, name: str, key_node: yaml.Node, node: yaml.Node, hosts: dict[str, str]) -> StageDecl:
        decl = StageDecl(name=name, type="", params={}, inputs=[], line=_line(key_node))
        self.classes[name] = None
        if not STAGE_NAME_RE.fullmatch(name):
            self.add(key_node, f"stage name {name!r} is not valid, expected letters, digits, '_' or '-'")
        if not isinstance(node, yaml.MappingNode):
            self.add(node, f"stage {name!r} must be a mapping with at least `type`, got {self.describe(node)}")
            return decl
        keys = self.stage_keys[name] = self.pairs(node)
        for key, (k, _) in keys.items():
            if key not in STAGE_KEYS:
                self.add(k, f"stage {name!r}: {_unknown_key(key, STAGE_KEYS)}")
        cls = self.read_type(decl, key_node, keys.get("type"))
        decl.params = self.read_params(decl, cls, key_node, keys.get("params"))
        decl.inputs = self.read_inputs(decl, keys.get("inputs"))
        decl.replicas = self.read_replicas(decl, keys.get("replicas"))
        decl.host = self.read_host(decl, keys.get("host"), hosts)
        return decl

    def read_type(self, decl: StageDecl, stage_node: yaml.Node,
                  pair: tuple[yaml.Node, yaml.Node] | None) -> type[Stage] | None:
        known = ", ".join(self.types or {})
        if pair is None:
            self.add(stage_node, f"stage {decl.name!r}: missing `type`, expected a registered stage type "
                                 f"(known: {known})")
            return None
        type_name = self.text(pair[1])
        if type_name is None:
            self.add(pair[1], f"stage {decl.name!r}: `type` must be a stage type name, got {self.describe(pair[1])}")
            return None
        decl.type = type_name
        if self.types is None:  # the plugin set itself is broken; that was reported already
            return None
        cls = self.types.get(type_name)
        if cls is None:
            close = _close(type_name, self.types)
            hint = (f"did you mean {_quoted(close)}? (`alpr-topo plugins` lists every type)" if close
                    else f"expected a registered type (known: {known})")
            self.add(pair[1], f"stage {decl.name!r}: unknown stage type {type_name!r}, {hint}")
        self.classes[decl.name] = cls
        return cls

    def read_params(self, decl: StageDecl, cls: type[Stage] | None, stage_node: yaml.Node,
                    pair: tuple[yaml.Node, yaml.Node] | None) -> dict:
        """Validate with the type's pydantic schema: one problem per error, on its key's line."""
        raw: dict[str, Any] = {}
        keys: Pairs = {}
        if pair is not None and not (isinstance(pair[1], yaml.ScalarNode) and pair[1].tag == NULL_TAG):
            if not isinstance(pair[1], yaml.MappingNode):
                self.add(pair[1], f"stage {decl.name!r}: `params` must be a mapping of parameter names to values, "
                                  f"got {self.describe(pair[1])}")
                return {}
            keys = self.pairs(pair[1])
            for key, (_, value_node) in keys.items():
                ok, value = self.value(value_node)
                if ok:
                    raw[key] = value
        if cls is None:
            return raw
        try:
            return cls.Params.model_validate(raw).model_dump()
        except ValidationError as exc:
            fallback = pair[0] if pair is not None else stage_node
            for error in exc.errors(include_url=False):
                self.param_problem(decl.name, cls, error, keys, fallback)
            return raw

    def param_problem(self, stage: str, cls: type[Stage], error: dict, keys: Pairs, fallback: yaml.Node) -> None:
        loc = [str(part) for part in error["loc"]]
        name = ".".join(loc)
        if loc and loc[0] in keys and (self.is_broken(keys[loc[0]][1]) or error["type"] == "missing"):
            return  # an unset variable or unreadable value was reported; the rest follows from it
        where = self._node_at(keys, loc) or fallback
        fields = cls.Params.model_fields
        if error["type"] == "missing":
            info = fields[loc[0]].description if loc and loc[0] in fields else None
            self.add(where, f"stage {stage!r}: missing required parameter {name!r}" + (f" ({info})" if info else ""))
        elif error["type"] == "extra_forbidden" and len(loc) == 1:
            self.add(where, f"stage {stage!r}: {self._unknown_param(loc[0], cls)}")
        else:
            self.add(where, f"stage {stage!r}: parameter {name!r}: {error['msg']} (got {_show(error.get('input'))})")

    @staticmethod
    def _unknown_param(name: str, cls: type[Stage]) -> str:
        fields = list(cls.Params.model_fields)
        if not fields:
            return f"unknown parameter {name!r}, expected no parameters ({cls.type_name} takes none)"
        close = _close(name, fields)
        listing = f"parameters of {cls.type_name}: {', '.join(fields)}"
        if close:
            return f"unknown parameter {name!r}, did you mean {_quoted(close)}? ({listing})"
        return f"unknown parameter {name!r}, expected one of the {listing}"

    def _node_at(self, keys: Pairs, loc: list[str]) -> yaml.Node | None:
        """The deepest node of the params tree along a pydantic error location (for its line)."""
        if not loc or loc[0] not in keys:
            return None
        found, node = keys[loc[0]]
        for part in loc[1:]:
            if isinstance(node, yaml.MappingNode) and part in (sub := self.pairs(node)):
                found, node = sub[part]
            elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
                found = node = node.value[int(part)]
            else:
                break
        return found

    def read_inputs(self, decl: StageDecl, pair: tuple[yaml.Node, yaml.Node] | None) -> list[str]:
        if pair is None or (isinstance(pair[1], yaml.ScalarNode) and pair[1].tag == NULL_TAG):
            return []
        node = pair[1]
        if not isinstance(node, yaml.SequenceNode):
            self.bad_inputs.add(decl.name)
            self.add(node, f"stage {decl.name!r}: `inputs` must be a list of stage names such as [cam], "
                           f"got {self.describe(node)}")
            return []
        inputs: list[str] = []
        nodes = self.input_nodes[decl.name] = []
        for item in node.value:
            upstream = self.text(item)
            if upstream is None:
                self.add(item, f"stage {decl.name!r}: inputs must be stage names, got {self.describe(item)}")
            elif upstream in inputs:
                self.add(item, f"stage {decl.name!r} lists input {upstream!r} twice, expected each input once")
            else:
                inputs.append(upstream)
                nodes.append((upstream, item))
        return inputs

    def read_replicas(self, decl: StageDecl, pair: tuple[yaml.Node, yaml.Node] | None) -> int:
        if pair is None:
            return 1
        ok, value = self.value(pair[1])
        if not ok:
            return 1
        if not _is_int(value) or value < 1:
            self.add(pair[1], f"stage {decl.name!r}: replicas must be an integer >= 1, got {_show(value)}")
            return 1
        return value

    def read_host(self, decl: StageDecl, pair: tuple[yaml.Node, yaml.Node] | None, hosts: dict[str, str]) -> str:
        if pair is None:
            return ""
        host = self.text(pair[1])
        if host is None:
            self.add(pair[1], f"stage {decl.name!r}: `host` must be a host name from `hosts:`, "
                              f"got {self.describe(pair[1])}")
            return ""
        if host not in hosts:
            self.add(pair[1], f"stage {decl.name!r}: {self._unknown_host(host, hosts)}")
        return host

    @staticmethod
    def _unknown_host(host: str, hosts: dict[str, str]) -> str:
        if not hosts:
            return (f"host {host!r} is not defined, expected it named in a top-level `hosts:` section "
                    "(with transport kind tcp)")
        close = _close(host, hosts)
        if close:
            return f"unknown host {host!r}, did you mean {_quoted(close)}? (hosts: {', '.join(hosts)})"
        return f"unknown host {host!r}, expected one of the hosts: {', '.join(hosts)}"

    # the graph -----------------------------------------------------------------------------

    def check_graph(self, topo: Topology) -> None:
        """Inputs name real stages, sources take none, others need some, and nothing loops."""
        for decl in topo.stages.values():
            self.check_inputs(topo, decl)
        self.check_cycles(topo)

    def check_inputs(self, topo: Topology, decl: StageDecl) -> None:
        names = list(topo.stages)
        for upstream, node in self.input_nodes.get(decl.name, []):
            if upstream == decl.name:
                self.add(node, f"stage {decl.name!r} lists itself as an input, expected upstream stages only")
            elif upstream not in topo.stages:
                others = [n for n in names if n != decl.name]
                close = _close(upstream, others)
                hint = (f"did you mean {_quoted(close)}? (stages: {', '.join(others)})" if close
                        else f"expected one of the stages: {', '.join(others)}")
                self.add(node, f"stage {decl.name!r}: input {upstream!r} is not a stage, {hint}")
        cls = self.classes.get(decl.name)
        if cls is None:
            return  # unknown or missing type: already reported, nothing to say about inputs
        if cls.is_source and decl.inputs:
            self.add(self.stage_keys[decl.name]["inputs"][0],
                     f"stage {decl.name!r}: source stages take no inputs, expected no `inputs` for "
                     f"type {cls.type_name}")
        elif not cls.is_source and not decl.inputs and decl.name not in self.bad_inputs:
            sources = [n for n, c in (self.types or {}).items() if c.is_source][:3]
            self.add(decl.line, f"stage {decl.name!r} has no inputs, expected `inputs: [<upstream>]` "
                                f"(only source types such as {', '.join(sources) or 'source.*'} run without inputs)")

    def check_cycles(self, topo: Topology) -> None:
        """One problem per strongly connected group, naming one concrete cycle through it."""
        order = list(topo.stages)
        edges = {n: [d for d in topo.outputs(n) if d != n] for n in order}
        for group in _strong_components(order, edges):
            if len(group) < 2:
                continue
            start = min(group, key=order.index)
            cycle = _shortest_cycle(start, edges, group)
            self.add(topo.stages[start].line, f"stages form a cycle {' -> '.join(cycle)}, expected data to flow "
                                              "one way from sources to sinks")

    # ports ---------------------------------------------------------------------------------

    def check_ports(self, topo: Topology, pair: tuple[yaml.Node, yaml.Node] | None) -> None:
        """With tcp, try every port the run would bind on this machine; report those taken."""
        if topo.transport.kind != "tcp":
            return
        base = topo.transport.base_port
        total = topo.process_count()
        if base + 2 * total - 1 > MAX_PORT:
            self.add(pair[0] if pair is not None else 1,
                     f"transport.base_port {base} with {total} processes needs ports up to {base + 2 * total - 1}, "
                     f"expected base_port + 2 x processes <= {MAX_PORT + 1}")
            return
        status_port = topo.status.get("port", 0)
        for decl in topo.stages.values():
            address = topo.hosts.get(decl.host, "127.0.0.1") if decl.host else "127.0.0.1"
            for replica in range(decl.replicas):
                for parity in (0, 1):
                    port = base + 2 * topo.stage_index(decl.name, replica) + parity
                    if port == status_port:
                        self.add(decl.line, f"status.port {port} is also the port for stage {decl.name!r} replica "
                                            f"{replica}, expected a port outside the transport ports "
                                            f"{base}..{base + 2 * total - 1}")
                    if is_local_address(address) and (self.host is None or decl.host == self.host):
                        self._check_port(decl, replica, address, port)

    def _check_port(self, decl: StageDecl, replica: int, address: str, port: int) -> None:
        error = port_in_use(address, port)
        if error is None or error.errno == errno.EADDRNOTAVAIL:
            return  # free, or the address is not this machine's after all
        if error.errno == errno.EADDRINUSE:
            self.add(decl.line, f"port {port} for stage {decl.name!r} replica {replica} is in use, "
                                "expected a free port (change transport.base_port)")
        else:
            self.add(decl.line, f"port {port} for stage {decl.name!r} replica {replica} cannot be bound on "
                                f"{address} ({error.strerror}), expected a free port (change transport.base_port)")

    # plugins' own rules ----------------------------------------------------------------------

    def plugin_checks(self, topo: Topology) -> None:
        """Rules that plugins add (``alpr_topo_validate_topology``), run once the basics hold."""
        try:
            results = plugin_manager().hook.alpr_topo_validate_topology(topology=topo)
        except Exception as exc:  # a broken plugin check is a problem to show, not a crash
            self.add(1, f"a plugin's alpr_topo_validate_topology hook failed: {type(exc).__name__}: {exc}")
            return
        for result in results:
            for item in result or []:
                if isinstance(item, (tuple, list)) and len(item) == 2 and _is_int(item[0]):
                    self.add(max(int(item[0]), 1), str(item[1]))
                else:
                    self.add(1, str(item))


def _strong_components(order: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so a long chain of stages cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in order:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def _shortest_cycle(start: str, edges: dict[str, list[str]], group: list[str]) -> list[str]:
    """Breadth-first from ``start`` back to itself inside one strongly connected group."""
    members = set(group)
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in edges[node]:
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return list(reversed(path)) + [start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    return [start, start]  # unreachable for a real strongly connected group


# -- entry points -------------------------------------------------------------------------------


def parse(text: str, path: str = "<string>", environ: dict[str, str] | None = None, host: str | None = None) -> Topology:
    """Check topology YAML given as text; ``path`` is only used in messages.

    ``environ`` defaults to ``os.environ`` (a parameter so callers and tests can pin it).
    With ``host``, only the tcp ports of that host's stages are checked (the others belong to
    the supervisors of the other hosts, which may well be running).
    """
    return _Loader(path, host).run(text, dict(os.environ) if environ is None else environ)


def load(path: str, host: str | None = None) -> Topology:
    """Read and check a topology file; raises :class:`TopologyError` listing every problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise TopologyError([Problem(path, 1, f"cannot read the file ({exc.strerror}), "
                                              "expected a readable topology YAML file")]) from exc
    except UnicodeDecodeError as exc:
        raise TopologyError([Problem(path, 1, f"the file is not UTF-8 text ({exc.reason}), "
                                              "expected a UTF-8 topology YAML file")]) from exc
    return parse(text, path, host=host)


__all__ = [
    "Problem", "TopologyError", "StageDecl", "TransportDecl", "Topology", "load", "parse",
    "is_local_address", "port_in_use",
]
