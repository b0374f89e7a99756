"""A real S3 API on 127.0.0.1: moto's server mode in its own process, started and stopped by the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]  # the environment a client needs: endpoint and credentials
    proc: subprocess.Popen

    def fs(self, **creds: str) -> pafs.S3FileSystem:
        host = self.endpoint.removeprefix("http://")
        return pafs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1",
                                 access_key=creds.get("access_key", "testing"),
                                 secret_key=creds.get("secret_key", "testing"), allow_bucket_creation=True)

    def put_tree(self, local: Path, uri_path: str) -> None:
        fs = self.fs()
        for p in sorted(local.rglob("*")):
            if p.is_file():
                with fs.open_output_stream(f"{uri_path}/{p.relative_to(local).as_posix()}") as out:
                    out.write(p.read_bytes())

    def get_tree(self, uri_path: str, local: Path) -> Path:
        fs = self.fs()
        for info in fs.get_file_info(pafs.FileSelector(uri_path, recursive=True)):
            if info.type == pafs.FileType.File:
                target = local / info.path[len(uri_path) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_stream(info.path, compression=None) as src:
                    target.write_bytes(src.read())
        return local

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def start_s3_server(extra_env: dict[str, str] | None = None) -> S3Server:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(extra_env or {})})
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    return S3Server(endpoint, env, proc)
