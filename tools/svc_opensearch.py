"""OpenSearch, single node, from its distribution on Maven Central.

The artifact is ``org.opensearch.distribution.integ-test-zip:opensearch`` (the minimal
distribution: no bundled JDK and no plugins, so the security plugin is absent and HTTP is plain on
loopback). It is checked against its published SHA-512 and unpacked into ``install/``; the
configuration is a per-service copy in ``data/config`` (``OPENSEARCH_PATH_CONF``) so the install
stays read-only. OpenSearch 2.19 is the newest line that runs on Java 17, which is what Debian 12
ships (3.x needs Java 21).

The minimal distribution also lacks the ``analysis-common`` module, which holds the n-gram
tokenizers of sink.opensearch's index template. Maven Central publishes that module as a plain
jar (``org.opensearch.plugin:analysis-common``, its Lucene library is already in ``lib/``), so it
is added to ``modules/`` with the descriptor OpenSearch reads; plate search then runs locally as
it does on a regular distribution.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from .svc_base import LOOPBACK, MAVEN_REPO, Say, Service, ServiceError, download, http_json, java_home

OPENSEARCH_VERSION = os.environ.get("ALPR_TOPO_OPENSEARCH_VERSION", "2.19.6")


def unzip(archive: Path, dest: Path) -> None:
    """Extract keeping the Unix permission bits (zipfile drops them; bin/opensearch must stay executable)."""
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            path = Path(z.extract(info, dest))
            mode = info.external_attr >> 16
            if mode and not info.is_dir():
                os.chmod(path, mode & 0o777)


#: ``modules/analysis-common/plugin-descriptor.properties`` (``extended.plugins`` is left empty:
#: upstream names lang-painless, which the minimal distribution lacks and the tokenizers do not need)
ANALYSIS_COMMON_DESCRIPTOR = """\
description=Adds "built in" analyzers to OpenSearch.
version={version}
name=analysis-common
classname=org.opensearch.analysis.common.CommonAnalysisPlugin
java.version=11
opensearch.version={version}
extended.plugins=
has.native.controller=false
"""


class OpenSearch(Service):
    name = "opensearch"
    title = "OpenSearch"
    version = f"{OPENSEARCH_VERSION}+analysis-common"  # the install marker: older installs lack the module
    ports = {"port": 9200, "transport_port": 9300}
    settings = {"heap": "512m"}
    start_timeout_s = 180.0

    @property
    def home(self) -> Path:
        return self.install_dir / f"opensearch-{OPENSEARCH_VERSION}"

    def install(self, say: Say) -> None:
        url = (f"{MAVEN_REPO}/org/opensearch/distribution/integ-test-zip/opensearch/{OPENSEARCH_VERSION}/"
               f"opensearch-{OPENSEARCH_VERSION}.zip")
        archive = self.dir / f"opensearch-{OPENSEARCH_VERSION}.zip"
        say(f"downloading {url}")
        download(url, archive, say, sha512_url=url + ".sha512")
        shutil.rmtree(self.install_dir, ignore_errors=True)
        say("unpacking")
        unzip(archive, self.install_dir)
        archive.unlink()
        if not (self.home / "bin" / "opensearch").exists():
            raise ServiceError(f"the archive did not contain opensearch-{OPENSEARCH_VERSION}/bin/opensearch")
        jar = f"analysis-common-{OPENSEARCH_VERSION}.jar"
        url = f"{MAVEN_REPO}/org/opensearch/plugin/analysis-common/{OPENSEARCH_VERSION}/{jar}"
        module = self.home / "modules" / "analysis-common"
        say(f"adding the analysis-common module (n-gram tokenizers) from {url}")
        download(url, module / jar, say, sha512_url=url + ".sha512")
        (module / "plugin-descriptor.properties").write_text(ANALYSIS_COMMON_DESCRIPTOR.format(version=OPENSEARCH_VERSION))

    def notes(self) -> dict[str, Any]:
        return {"server": f"OpenSearch {OPENSEARCH_VERSION} (integ-test-zip + analysis-common: no security plugin)"}

    def prepare(self, cfg: dict[str, Any], say: Say) -> None:
        conf = self.mkdir(self.data_dir / "config")
        self.mkdir(conf / "jvm.options.d")
        self.mkdir(self.data_dir / "nodes")
        self.mkdir(self.data_dir / "logs")
        for source in (self.home / "config").iterdir():
            target = conf / source.name
            if source.is_file() and not target.exists():
                self.write(target, source.read_text())
        heap = cfg["settings"]["heap"]
        jvm = (self.home / "config" / "jvm.options").read_text()
        jvm = re.sub(r"(?m)^-Xms\S+$", f"-Xms{heap}", re.sub(r"(?m)^-Xmx\S+$", f"-Xmx{heap}", jvm))
        # Relative paths in the stock jvm.options point into the install; keep GC logs and heap dumps with the data.
        jvm = re.sub(r"file=logs/gc\.log", f"file={self.data_dir / 'logs' / 'gc.log'}", jvm)
        jvm = jvm.replace("-XX:HeapDumpPath=data", f"-XX:HeapDumpPath={self.data_dir / 'nodes'}")
        jvm = jvm.replace("-XX:ErrorFile=logs/", f"-XX:ErrorFile={self.data_dir / 'logs'}/")
        self.write(conf / "jvm.options", jvm)
        self.write(conf / "opensearch.yml", "\n".join([
            "# Generated by alpr-topo services on every start (ports from ALPR_TOPO_OPENSEARCH_*).",
            "cluster.name: alpr-topo",
            "node.name: local",
            f"network.host: {LOOPBACK}",
            f"http.port: {cfg['ports']['port']}",
            f"transport.port: {cfg['ports']['transport_port']}",
            "discovery.type: single-node",
            f"path.data: {self.data_dir / 'nodes'}",
            f"path.logs: {self.data_dir / 'logs'}",
            "bootstrap.memory_lock: false",
            "cluster.routing.allocation.disk.threshold_enabled: false",  # a full dev disk must not make indices read-only
            "action.auto_create_index: true",
            "",
        ]))

    def command(self, cfg: dict[str, Any]) -> list[str]:
        return [str(self.home / "bin" / "opensearch")]

    def environment(self, cfg: dict[str, Any]) -> dict[str, str]:
        heap = cfg["settings"]["heap"]
        return {"OPENSEARCH_JAVA_HOME": str(java_home()), "OPENSEARCH_PATH_CONF": str(self.data_dir / "config"),
                "OPENSEARCH_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}", "OPENSEARCH_TMPDIR": str(self.mkdir(self.data_dir / "tmp")),
                "HOME": str(self.data_dir)}

    def probe(self, cfg: dict[str, Any]) -> None:
        status, body = http_json(f"http://{LOOPBACK}:{cfg['ports']['port']}/_cluster/health?timeout=2s")
        if status != 200 or not isinstance(body, dict) or body.get("status") not in ("green", "yellow"):
            raise ConnectionError(f"cluster health: {status} {body}")

    def connection(self, cfg: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"http://{LOOPBACK}:{cfg['ports']['port']}"}
