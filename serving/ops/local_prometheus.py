"""A real Prometheus server on loopback, for the demo, the rollout benchmark and the tests.

It runs Debian's ``prometheus`` binary (``scripts/bootstrap.sh`` installs it) with a generated
config that scrapes the given targets, stores its data in a folder of the caller's choosing and
stops cleanly. Production points the controller at its own Prometheus instead.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def available() -> bool:
    return shutil.which("prometheus") is not None


class LocalPrometheus:
    """``prometheus`` scraping ``targets`` every ``scrape_s`` seconds, listening on ``127.0.0.1:port``."""

    def __init__(self, folder: Path, port: int, targets: list[str], scrape_s: float = 1.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("Debian's prometheus package is required (scripts/bootstrap.sh installs it)")
        folder.mkdir(parents=True, exist_ok=True)
        every = f"{scrape_s:g}s"
        (folder / "prometheus.yml").write_text(
            f"global: {{scrape_interval: {every}, evaluation_interval: {every}}}\n"
            f"scrape_configs:\n  - job_name: slimgate\n    static_configs: [{{targets: {targets!r}}}]\n"
        )
        self.url = f"http://127.0.0.1:{port}"
        self._log_path = folder / "prometheus.log"
        self._log = open(self._log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start:\n{self._log_path.read_text()[-3000:]}")
            time.sleep(0.3)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
