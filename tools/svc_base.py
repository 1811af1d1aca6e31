"""The common base of the local backend services behind ``alpr-topo services``.

Each service (``svc_kafka``, ``svc_postgres``, ...) is a :class:`Service` subclass that says how to
install itself once into the cache folder, which command runs it, and how to tell that it is
ready. The base does the rest the same way for all of them:

- the cache folder: ``$ALPR_TOPO_SERVICES_DIR``, else ``~/.cache/alpr-topo/services``; as root,
  ``/var/cache/alpr-topo/services``, because PostgreSQL and OpenSearch refuse to run as root and
  the unprivileged user that runs them cannot enter ``/root``;
- per service ``<dir>/<name>/``: ``install/`` (what the installer built or downloaded, with an
  ``.installed`` marker naming the version, so a second install is a no-op), ``data/``,
  ``<name>.log`` (the server's stdout and stderr), ``install.log`` and ``state.json`` (the pid
  file: pid, process start time, ports and settings of the running server);
- start: a plain process in its own session (``setsid``), so Ctrl-C in the terminal that started
  it does not reach it and ``stop`` can signal its whole process group; as root it runs as the
  system user ``alpr-topo``;
- readiness: the service's own probe (a real request) until it answers or the timeout passes;
- stop: the service's stop signal (SIGTERM, or SIGINT for PostgreSQL's fast shutdown), then
  SIGKILL to the whole group after a timeout; a stop leaves no process of the group behind.

Ports and settings come from ``ALPR_TOPO_<SERVICE>_<KEY>`` environment variables (for example
``ALPR_TOPO_KAFKA_PORT``) and are recorded in ``state.json``, so ``status`` and ``env`` report
what the running server really uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

Say = Callable[[str], None]

SERVICE_USER = "alpr-topo"
LOOPBACK = "127.0.0.1"
MAVEN_REPO = os.environ.get("ALPR_TOPO_MAVEN_REPO", "https://repo1.maven.org/maven2")


class ServiceError(RuntimeError):
    """A service could not be installed, started or stopped; the message says why and what to do."""


def services_dir() -> Path:
    """The install cache and data folder of all services (see the module docstring for why root differs)."""
    configured = os.environ.get("ALPR_TOPO_SERVICES_DIR")
    if configured:
        return Path(configured).expanduser().absolute()
    if os.geteuid() == 0:
        return Path("/var/cache/alpr-topo/services")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "alpr-topo" / "services"


def _no_say(_: str) -> None:
    pass


# -- running as an unprivileged user ---------------------------------------------------------------


def service_account() -> tuple[int, int] | None:
    """(uid, gid) the servers run as: the system user ``alpr-topo`` when we are root (created on first
    use), else None (they run as the current user)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run([useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                                 "--shell", "/usr/sbin/nologin", SERVICE_USER], capture_output=True, text=True)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise ServiceError(f"could not create the system user '{SERVICE_USER}' that runs the services as root: "
                               f"{result.stderr.strip()}")
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def check_reachable(path: Path, account: tuple[int, int] | None) -> None:
    """Fail clearly when the unprivileged service user cannot reach ``path`` (a folder inside /root)."""
    if account is None:
        return
    for folder in [path, *path.parents]:
        if folder.exists() and not os.stat(folder).st_mode & 0o001:
            raise ServiceError(f"{folder} is closed to other users, so the user '{SERVICE_USER}' that runs the services "
                               f"cannot reach {path}: set ALPR_TOPO_SERVICES_DIR to a folder outside it "
                               "(as root the default is /var/cache/alpr-topo/services)")


# -- install helpers -------------------------------------------------------------------------------


def run_logged(cmd: list[str], log_path: Path, say: Say, what: str, *, env: dict[str, str] | None = None,
               cwd: Path | None = None, heartbeat_s: float = 30.0, account: tuple[int, int] | None = None) -> None:
    """Run a long install step with its output in ``log_path``; say every ``heartbeat_s`` that it is
    still going (a Go or Maven build prints nothing useful for minutes), and on failure raise with
    the end of the log, which is where the reason is."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(cmd)}\n".encode())
        log.flush()
        kwargs: dict[str, Any] = {}
        if account is not None:
            kwargs.update(user=account[0], group=account[1], extra_groups=[])
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=cwd, **kwargs)
        except FileNotFoundError as exc:
            raise ServiceError(f"{what}: {cmd[0]} not found") from exc
        next_note = started + heartbeat_s
        while proc.poll() is None:
            time.sleep(0.5)
            if time.monotonic() >= next_note:
                say(f"still {what} ({time.monotonic() - started:.0f} s, log: {log_path})")
                next_note += heartbeat_s
    if proc.returncode != 0:
        raise ServiceError(f"{what} failed (exit {proc.returncode}); the end of {log_path}:\n{tail(log_path, 25)}")


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def download(url: str, dest: Path, say: Say, sha512_url: str | None = None) -> None:
    """Download ``url`` to ``dest`` (through a temporary file, so an interrupted download is never taken
    for a finished one), saying how far it got, and check it against the published SHA-512."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    digest = hashlib.sha512()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_note = 0, 0.25
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total and done / total >= next_note:
                    say(f"downloaded {done >> 20} of {total >> 20} MiB")
                    next_note += 0.25
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise ServiceError(f"could not download {url}: {exc}") from exc
    if sha512_url:
        try:
            with urllib.request.urlopen(sha512_url, timeout=60) as response:
                expected = response.read().decode().split()[0].strip().lower()
        except (urllib.error.URLError, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise ServiceError(f"could not download the checksum {sha512_url}: {exc}") from exc
        if digest.hexdigest() != expected:
            partial.unlink(missing_ok=True)
            raise ServiceError(f"{url}: SHA-512 mismatch (expected {expected[:16]}..., got {digest.hexdigest()[:16]}...)")
    partial.replace(dest)


def maven_settings(root: Path) -> Path:
    """A Maven settings file that sends every repository to Maven Central, so POMs that declare other
    repositories (jitpack, Eclipse, ...) still resolve from the one registry we can reach."""
    path = root / "maven" / "settings.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""<settings>
  <localRepository>{root / 'maven' / 'repository'}</localRepository>
  <mirrors>
    <mirror><id>central-only</id><mirrorOf>*</mirrorOf><url>{MAVEN_REPO}</url></mirror>
  </mirrors>
</settings>
""")
    return path


def maven(root: Path) -> list[str]:
    """The ``mvn`` command line with the private settings and local repository under ``root``."""
    mvn = shutil.which("mvn")
    if mvn is None:
        ensure_debian_packages(["maven"], "Maven (to fetch the Java servers from Maven Central)")
        mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("mvn not found: install Maven (Debian: apt-get install maven)")
    return [mvn, "-B", "-ntp", "--strict-checksums", "-s", str(maven_settings(root))]


def java_home() -> Path:
    """The Java installation the Java servers run on (Java 17 or newer, from PATH or JAVA_HOME)."""
    configured = os.environ.get("JAVA_HOME")
    java = str(Path(configured) / "bin" / "java") if configured else shutil.which("java")
    if not java or not os.path.exists(java):
        ensure_debian_packages(["openjdk-17-jre-headless"], "Java 17")
        java = shutil.which("java")
    if not java:
        raise ServiceError("java not found: install Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless)")
    return Path(os.path.realpath(java)).parent.parent


def ensure_debian_packages(packages: list[str], what: str, say: Say = _no_say) -> None:
    """apt-get install ``packages`` when we are root on a Debian system; otherwise leave it to the
    caller's clear error (we never sudo on someone's behalf)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    say(f"installing {what} from Debian's packages: {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"apt-get install {' '.join(packages)} failed:\n{result.stderr.strip()[-2000:]}")


# -- probes ----------------------------------------------------------------------------------------


def port_open(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether we could listen on host:port (SO_REUSEADDR, as the servers do)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def http_json(url: str, timeout: float = 3.0, method: str = "GET", body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One HTTP request; (status, decoded JSON body or text). Raises OSError when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


# -- the service base class ------------------------------------------------------------------------


class Service:
    """One local server. Subclasses set the class attributes and implement ``install``,
    ``command`` and ``probe``; the other hooks are optional."""

    name: str = ""
    title: str = ""
    version: str = ""  # what install() installs; a different version in the marker reinstalls
    ports: dict[str, int] = {}  # key -> default port; "port" is the main one (ALPR_TOPO_<NAME>_PORT)
    settings: dict[str, str] = {}  # key -> default value of other settings (ALPR_TOPO_<NAME>_<KEY>)
    stop_signal: int = signal.SIGTERM
    signal_group: bool = True  # send stop_signal to the whole process group (False: only the leader)
    start_timeout_s: float = 180.0
    stop_timeout_s: float = 60.0

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or services_dir()).absolute()
        self.dir = self.root / self.name
        self.install_dir = self.dir / "install"
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / f"{self.name}.log"
        self.install_log = self.dir / "install.log"
        self.state_path = self.dir / "state.json"
        self._proc: subprocess.Popen | None = None
        self._account_cache: tuple[int, int] | None | bool = False

    # -- configuration ----------------------------------------------------------------------------

    def env_name(self, key: str) -> str:
        return f"ALPR_TOPO_{self.name.upper()}_{key.upper()}"

    def config(self, port_overrides: dict[str, int] | None = None) -> dict[str, Any]:
        """Ports and settings for a new start: overrides, else the environment, else the defaults."""
        unknown = set(port_overrides or {}) - set(self.ports)
        if unknown:
            raise ServiceError(f"{self.name} has no port {', '.join(sorted(unknown))} (ports: {', '.join(self.ports)})")
        ports = {}
        for key, default in self.ports.items():
            raw = (port_overrides or {}).get(key) or os.environ.get(self.env_name(key)) or default
            try:
                ports[key] = int(raw)
            except ValueError as exc:
                raise ServiceError(f"{self.env_name(key)}={raw!r} is not a port number") from exc
        values = {key: os.environ.get(self.env_name(key), default) for key, default in self.settings.items()}
        return {"ports": ports, "settings": values}

    def account(self) -> tuple[int, int] | None:
        if self._account_cache is False:
            self._account_cache = service_account()
        return self._account_cache  # type: ignore[return-value]

    # -- install ----------------------------------------------------------------------------------

    def marker(self) -> Path:
        return self.install_dir / ".installed"

    def installed(self) -> bool:
        try:
            return self.marker().read_text().strip() == self.version
        except OSError:
            return False

    def ensure_installed(self, say: Say = _no_say) -> bool:
        """Install once; True when this call installed it (False: it already was)."""
        with self.lock():
            if self.installed():
                return False
            self.dir.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            say(f"installing {self.title} {self.version} (log: {self.install_log})")
            self.install(say)
            self.install_dir.mkdir(parents=True, exist_ok=True)
            self.marker().write_text(self.version + "\n")
            say(f"installed {self.title} in {time.monotonic() - started:.0f} s")
            return True

    def install(self, say: Say) -> None:
        raise NotImplementedError

    def notes(self) -> dict[str, Any]:
        """Facts about this installation worth showing in `status` (e.g. which server stands in)."""
        return {}

    # -- hooks for a start ------------------------------------------------------------------------

    def prepare(self, cfg: dict[str, Any], say: Say) -> None:
        """Write configuration files and initialise the data folder (first start) before ``command``."""

    def command(self, cfg: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def environment(self, cfg: dict[str, Any]) -> dict[str, str]:
        return {}

    def probe(self, cfg: dict[str, Any]) -> None:
        """One readiness check with a real request; raise (any exception, with a reason) when not ready."""
        raise NotImplementedError

    def after_ready(self, cfg: dict[str, Any], say: Say) -> None:
        """One-time setup that needs the running server (a database and its user)."""

    def connection(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """How clients reach it: the values printed by `up` and written to services.json."""
        return {}

    # -- files owned by the service user -----------------------------------------------------------

    def mkdir(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        account = self.account()
        if account is not None and os.stat(path).st_uid != account[0]:
            for folder, dirs, files in os.walk(path):
                for entry in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                    os.lchown(entry, *account)
        return path

    def write(self, path: Path, text: str, mode: int = 0o644) -> Path:
        """Write a file the server reads (or rewrites: keystores next to configs) as its own user."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, mode)
        account = self.account()
        if account is not None:
            os.chown(path, *account)
        return path

    def run_tool(self, cmd: list[str], what: str, env: dict[str, str] | None = None, say: Say = _no_say) -> None:
        """Run a helper of the server (initdb, the Kafka storage tool) as the service user."""
        run_logged(cmd, self.log_path, say, what, env={**os.environ, **(env or {})}, cwd=self.data_dir,
                   account=self.account())

    # -- state ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One install/start/stop of this service at a time, across processes (CLI and test fixture)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        """The pid of the running server, or None. The recorded process start time must match, so a
        reused pid after a reboot is never taken for the server."""
        state = self.state()
        if not state:
            return None
        try:
            proc = psutil.Process(state["pid"])
            if proc.status() == psutil.STATUS_ZOMBIE:
                self._reap(state["pid"])
                return None
            if abs(proc.create_time() - state["create_time"]) > 1.0:
                return None
        except (psutil.Error, KeyError):
            return None
        return int(state["pid"])

    def running(self) -> bool:
        return self.pid() is not None

    def running_config(self) -> dict[str, Any] | None:
        state = self.state()
        return {"ports": state["ports"], "settings": state["settings"]} if state and self.running() else None

    def group_members(self, pgid: int) -> list[psutil.Process]:
        """Live (non-zombie) processes of the server's process group."""
        members = []
        for proc in psutil.process_iter(["status"]):
            try:
                if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    members.append(proc)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return members

    def _reap(self, pid: int) -> None:
        """Collect our own exited child (a server started by this process), so it is not left a zombie."""
        if self._proc is not None and self._proc.pid == pid:
            self._proc.poll()
            return
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    # -- start, readiness, stop -------------------------------------------------------------------

    def start(self, say: Say = _no_say, port_overrides: dict[str, int] | None = None) -> bool:
        """Launch the server if it is not running (installing it first if needed); True when this call
        launched it. Does not wait for readiness (``wait_ready``), so several can start at once."""
        self.ensure_installed(say)
        with self.lock():
            running = self.running_config()
            if running is not None:
                if self.config(port_overrides)["ports"] != running["ports"]:
                    say(f"already running on ports {running['ports']}: stop it first to change them")
                return False
            check_reachable(self.root, self.account())
            cfg = self.config(port_overrides)
            for key, port in cfg["ports"].items():
                if not port_free(port):
                    raise ServiceError(f"{self.name}: port {port} on {LOOPBACK} is in use by another program; choose "
                                       f"another with {self.env_name(key)}=PORT")
            self.mkdir(self.data_dir)
            self.prepare(cfg, say)
            cmd = self.command(cfg)
            env = {**os.environ, **self.environment(cfg)}
            kwargs: dict[str, Any] = {}
            account = self.account()
            if account is not None:
                kwargs.update(user=account[0], group=account[1], extra_groups=[])
            with open(self.log_path, "ab") as log:
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}: {' '.join(cmd)}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              env=env, cwd=self.data_dir, start_new_session=True, **kwargs)
            state = {"pid": self._proc.pid, "create_time": psutil.Process(self._proc.pid).create_time(),
                     "started": time.time(), "version": self.version, **cfg}
            self.state_path.write_text(json.dumps(state, indent=2))
            os.chmod(self.state_path, 0o600)  # it holds the dev credentials
            say(f"started {self.title} (pid {self._proc.pid}, log: {self.log_path})")
            return True

    def wait_ready(self, say: Say = _no_say, timeout_s: float | None = None) -> dict[str, Any]:
        """Probe until the server answers; then run the one-time setup. Returns the connection info."""
        timeout_s = timeout_s or self.start_timeout_s
        deadline = time.monotonic() + timeout_s
        reason = "no answer yet"
        while True:
            cfg = self.running_config()
            if cfg is None:
                raise ServiceError(f"{self.name} exited before it was ready; the end of {self.log_path}:\n"
                                   f"{tail(self.log_path, 30)}")
            try:
                self.probe(cfg)
                break
            except Exception as exc:  # any failed probe means: not ready yet
                reason = str(exc) or type(exc).__name__
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} was not ready within {timeout_s:.0f} s ({reason}); the end of "
                                   f"{self.log_path}:\n{tail(self.log_path, 30)}")
            time.sleep(0.5)
        with self.lock():
            self.after_ready(cfg, say)
        return self.connection(cfg)

    def up(self, say: Say = _no_say, port_overrides: dict[str, int] | None = None,
           timeout_s: float | None = None) -> dict[str, Any]:
        """Start (unless running) and wait until ready."""
        self.start(say, port_overrides)
        return self.wait_ready(say, timeout_s)

    def stop(self, say: Say = _no_say, timeout_s: float | None = None) -> bool:
        """Stop the server and every process of its group; True when one was running."""
        timeout_s = timeout_s or self.stop_timeout_s
        with self.lock():
            pid = self.pid()
            if pid is None:
                self.state_path.unlink(missing_ok=True)
                return False
            say(f"stopping {self.title} (pid {pid})")
            with contextlib.suppress(ProcessLookupError):
                if self.signal_group:
                    os.killpg(pid, self.stop_signal)
                else:
                    os.kill(pid, self.stop_signal)
            deadline = time.monotonic() + timeout_s
            while self.group_members(pid) and time.monotonic() < deadline:
                self._reap(pid)
                time.sleep(0.2)
            if self.group_members(pid):
                say(f"{self.name} did not stop within {timeout_s:.0f} s: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while self.group_members(pid) and time.monotonic() < deadline:
                    self._reap(pid)
                    time.sleep(0.1)
            self._reap(pid)
            left = self.group_members(pid)
            if left:
                raise ServiceError(f"{self.name}: processes {[p.pid for p in left]} survived SIGKILL")
            self.state_path.unlink(missing_ok=True)
            self._proc = None
            return True

    def wipe(self) -> None:
        """Delete the data folder (the server must be stopped): the next start begins empty."""
        if self.running():
            raise ServiceError(f"{self.name} is running: stop it before wiping its data")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        """What `services status --json` shows for this service."""
        cfg = self.running_config()
        pid = self.pid()
        row: dict[str, Any] = {"installed": self.installed(), "version": self.version, "running": pid is not None,
                               "pid": pid, "dir": str(self.dir), "log": str(self.log_path), **self.notes()}
        if cfg is not None:
            row["ports"] = cfg["ports"]
            row["connection"] = self.connection(cfg)
        return row


def run_in_threads(jobs: dict[str, Callable[[], Any]], workers: int) -> dict[str, BaseException | None]:
    """Run named jobs on ``workers`` threads (in the given order); the exception of each, or None."""
    results: dict[str, BaseException | None] = {}
    queue = list(jobs.items())
    guard = threading.Lock()

    def worker() -> None:
        while True:
            with guard:
                if not queue:
                    return
                name, job = queue.pop(0)
            try:
                job()
                results[name] = None
            except BaseException as exc:  # reported by the caller, per service
                results[name] = exc

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
