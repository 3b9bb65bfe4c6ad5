"""`make submit` for real: a local Ray head (`ray start --head` on 127.0.0.1, token authentication on), the
pipeline submitted to it with `ray job submit`, the output checked, the head stopped.

Hermetic: free ports for every listening Ray service, its own temp dir and its own token file
(RAY_AUTH_TOKEN_PATH), so it neither collides with nor touches another Ray on the machine; teardown stops
exactly the processes this test started (the `ray start --block` process and its descendants, by pid),
never `ray stop`, which would kill every Ray on the machine.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.fixtures_shards import healthy_samples, write_shard

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_tree(process: subprocess.Popen) -> None:
    """Stop `ray start --block` and every process under it (by pid), politely then by force."""
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    alive = [p for p in tree if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


class Head:
    def __init__(self, address: str, env: dict[str, str], log: Path):
        self.address, self.env, self.log = address, env, log

    def ray(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
        return subprocess.run([str(VENV_BIN / "ray"), *args], env=env or self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def ray_head():
    # A short root: Ray's unix sockets live under it and socket paths are limited to ~107 characters.
    root = Path(tempfile.mkdtemp(prefix="grit-ray-", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0", PATH=f"{VENV_BIN}:{env['PATH']}",
               NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    dashboard = _free_port()
    # 4 logical CPUs: one spaCy actor + one detector actor (1 CPU each) + the light read/expand tasks.
    command = [
        str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--port", str(_free_port()), "--num-cpus", "4", "--num-gpus", "0",
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
        "--dashboard-agent-grpc-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
        "--runtime-env-agent-port", str(_free_port()), "--temp-dir", str(root / "ray"),
        "--disable-usage-stats",
    ]
    log = root / "head.log"
    with open(log, "w") as log_file:
        # RAY_AUTH_MODE=token: the head requires the token (Ray 2.60 turns it on by default anyway).
        process = subprocess.Popen(command, env={**env, "RAY_AUTH_MODE": "token"}, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    head = Head(f"http://127.0.0.1:{dashboard}", env, log)
    try:
        deadline = time.monotonic() + 180
        while True:  # the job server answers once the dashboard is up
            if process.poll() is not None:
                pytest.fail(f"ray start --head exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            probe = head.ray("job", "list", "--address", head.address, env={**env, "RAY_AUTH_MODE": "token"})
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray job server did not come up:\n{probe.stderr[-2000:]}\n{log.read_text()[-2000:]}")
            time.sleep(1)
        yield head
    finally:
        _stop_tree(process)
        shutil.rmtree(root, ignore_errors=True)


def test_make_submit_runs_the_pipeline_on_a_token_authenticated_head(ray_head, tmp_path):
    # Token authentication is on: a wrong token is refused.
    refused = ray_head.ray("job", "list", "--address", ray_head.address,
                           env={**ray_head.env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64})
    assert refused.returncode != 0

    shards = tmp_path / "shards"
    failed = {"key": "000010009", "caption": "a cup on a table", "image": None, "status": "failed_to_download",
              "error_message": "HTTP Error 404: Not Found"}
    inputs = {"00000": healthy_samples(0, 3), "00001": healthy_samples(1, 2) + [failed]}
    for name, samples in inputs.items():
        write_shard(shards, name, samples)
    out = tmp_path / "grit"

    make_env = {k: v for k, v in ray_head.env.items() if k != "RAY_AUTH_MODE"}  # the Makefile turns it on
    result = subprocess.run(
        ["make", "--no-print-directory", "submit", f"RAY_ADDRESS={ray_head.address}", f"INPUT={shards}",
         f"OUTPUT={out}", "DETECTOR=noop",
         "PIPELINE_ARGS=--no-progress --text-pool 1 --ground-pool 1 --read-parallelism 1"],
        cwd=ROOT, env=make_env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert "succeeded" in (result.stdout + result.stderr)

    # Every input key is in the build or in the rejects, exactly once; the failed download is a reject.
    for name, samples in inputs.items():
        assert (out / f"{name}.done").exists()
        kept = pq.read_table(out / f"{name}.parquet").to_pylist()
        rejects = pq.read_table(out / f"{name}_rejects.parquet").to_pylist()
        keys = [r["key"] for r in kept] + [r["key"] for r in rejects]
        assert sorted(keys) == sorted(s["key"] for s in samples)
        assert all(r["status"] == "grounded" for r in kept)
        assert len(kept) == sum(1 for s in samples if s.get("status", "success") == "success")
    assert {(r["key"], r["status"]) for r in pq.read_table(out / "00001_rejects.parquet").to_pylist()} == {
        ("000010009", "download_error")}

    # The job's driver ran the pipeline on this cluster (its actors are the cluster's), not on a Ray of its own.
    listed = ray_head.ray("list", "actors", "--address", ray_head.address, "--format", "json", "--limit", "1000",
                          "--detail", env={**ray_head.env, "RAY_AUTH_MODE": "token"})
    assert listed.returncode == 0, listed.stderr[-2000:]
    classes = {actor["class_name"] for actor in json.loads(listed.stdout)}
    # the stage actors: Ray Data's map workers (plan with a GPU stage) or the fused per-core actors (no GPU)
    assert any("MapWorker" in name or "ExpandWrite" in name for name in classes), classes
