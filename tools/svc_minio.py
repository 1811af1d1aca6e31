"""MinIO (S3-compatible object storage), built from source with the Go module proxy.

``go install github.com/minio/minio@VERSION`` with a private module and build cache under the
services folder; only the binary is kept (the caches, about 2 GB, are removed after the build).
MinIO's own binary downloads are not a registry we can reach, and MinIO is the S3 server the
backend targets in production, so it is worth the build: about 5 to 6 minutes on 2 cores, once.

The version is pinned to a module version the proxy lists: MinIO's release tags
(``RELEASE.2025-...``) are not semantic versions, so the proxy offers only pseudo-versions of
commits and no ``@latest``. Override it with ``ALPR_TOPO_MINIO_VERSION``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

from .svc_base import LOOPBACK, Say, Service, ServiceError, http_json, run_logged

MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = os.environ.get("ALPR_TOPO_MINIO_VERSION", "v0.0.0-20260212201848-7aac2a2c5b7c")


class MinIO(Service):
    name = "minio"
    title = "MinIO"
    version = MINIO_VERSION
    ports = {"port": 9000, "console_port": 9001}
    settings = {"access_key": "alpr-topo", "secret_key": "alpr-topo-secret", "region": "us-east-1"}
    start_timeout_s = 60.0

    @property
    def binary(self) -> str:
        return str(self.install_dir / "bin" / "minio")

    def install(self, say: Say) -> None:
        go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
        if go is None:
            raise ServiceError("go not found: MinIO is built with the Go toolchain (1.24 or newer; Debian 12's golang-go "
                               "is too old), install it from go.dev or a newer Debian")
        cache = self.root / "go"
        env = {**os.environ, "GOBIN": str(self.install_dir / "bin"), "GOPATH": str(cache / "path"),
               "GOMODCACHE": str(cache / "mod"), "GOCACHE": str(cache / "build"), "CGO_ENABLED": "0",
               "GOFLAGS": "-buildvcs=false -trimpath"}
        say(f"building {MINIO_MODULE}@{MINIO_VERSION} with the Go module proxy (about 5 to 6 minutes on 2 cores)")
        try:
            run_logged([go, "install", "-ldflags=-s -w", f"{MINIO_MODULE}@{MINIO_VERSION}"], self.install_log, say,
                       "building MinIO with Go", env=env, cwd=self.dir)
        finally:  # the module and build caches are only needed for this build
            with contextlib.suppress(ServiceError):  # `go clean` can delete the read-only module cache
                run_logged([go, "clean", "-modcache"], self.install_log, say, "cleaning the Go module cache", env=env,
                           cwd=self.dir)
            shutil.rmtree(cache, ignore_errors=True)
        if not os.access(self.binary, os.X_OK):
            raise ServiceError(f"the Go build finished but {self.binary} is missing")

    def notes(self) -> dict[str, Any]:
        return {"server": f"MinIO built from {MINIO_MODULE}@{MINIO_VERSION}"}

    def prepare(self, cfg: dict[str, Any], say: Say) -> None:
        self.mkdir(self.data_dir / "objects")
        self.mkdir(self.data_dir / "certs")

    def command(self, cfg: dict[str, Any]) -> list[str]:
        return [self.binary, "server", str(self.data_dir / "objects"), "--address", f"{LOOPBACK}:{cfg['ports']['port']}",
                "--console-address", f"{LOOPBACK}:{cfg['ports']['console_port']}",
                "--certs-dir", str(self.data_dir / "certs")]

    def environment(self, cfg: dict[str, Any]) -> dict[str, str]:
        s = cfg["settings"]
        if len(s["secret_key"]) < 8:
            raise ServiceError(f"{self.env_name('secret_key')}: MinIO needs a secret key of at least 8 characters")
        return {"MINIO_ROOT_USER": s["access_key"], "MINIO_ROOT_PASSWORD": s["secret_key"],
                "MINIO_REGION": s["region"], "MINIO_UPDATE": "off", "HOME": str(self.data_dir)}

    def probe(self, cfg: dict[str, Any]) -> None:
        status, _ = http_json(f"http://{LOOPBACK}:{cfg['ports']['port']}/minio/health/ready")
        if status != 200:
            raise ConnectionError(f"/minio/health/ready answered {status}")

    def connection(self, cfg: dict[str, Any]) -> dict[str, Any]:
        s, port = cfg["settings"], cfg["ports"]["port"]
        return {"endpoint": f"http://{LOOPBACK}:{port}", "host": f"{LOOPBACK}:{port}", "access_key": s["access_key"],
                "secret_key": s["secret_key"], "region": s["region"], "secure": False,
                "console": f"http://{LOOPBACK}:{cfg['ports']['console_port']}"}
