"""Submitting to a Ray cluster as docs/cluster.md says: the one-machine recipe, read from the page and run as
written (a fresh home directory, `ray get-auth-token --generate`, `ray start --head` with token authentication,
`make submit`, `make submit-status`, `make submit-logs`), and the one-line refusals of `make submit` when the
token is missing or wrong or nothing answers (grit_pipeline/submit.py, also against a stub job server).

Hermetic: HOME is a temp dir (so the token is this test's), `ray start` gets private ports and its own temp
dir on top of the documented flags, the job reads and writes temp folders; teardown stops exactly the
processes this test started (the `ray start --block` process and its descendants, by pid), never the recipe's
`ray stop`, which would stop every Ray on the machine.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from grit_pipeline.submit import find_token, submission_problem
from tests.fixtures_shards import healthy_samples, write_shard
from tests.test_config_flags import build_files

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"


def recipe_lines() -> list[str]:
    """The one-machine recipe's commands from docs/cluster.md (the code block after its anchor), comments off."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    block = text.split('<a id="one-machine-recipe"></a>', 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def test_the_recipe_generates_the_token_starts_a_token_head_and_submits_with_make():
    lines = recipe_lines()
    assert lines[0] == ".venv/bin/ray get-auth-token --generate > /dev/null"
    assert "RAY_AUTH_MODE=token .venv/bin/ray start --head" in lines[1]
    assert lines[2].startswith("make submit INPUT=demo_out/demo/shards ")
    assert lines[3] == "make submit-status" and lines[4].startswith("make submit-logs JOB=")
    assert lines[5] == ".venv/bin/ray stop" and len(lines) == 6


# --- grit_pipeline/submit.py against a stub job server: every refusal is one line with its fix --------------

GOOD = "a" * 32


class _StubJobServer(http.server.BaseHTTPRequestHandler):
    mode = "token"

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/api/authentication_mode":
            self._answer(200, json.dumps({"authentication_mode": self.mode}))
        elif self.path == "/api/jobs/":
            header = self.headers.get("Authorization")
            self._answer(200 if header == f"Bearer {GOOD}" or self.mode != "token" else 401 if not header else 403,
                         "[]")
        else:
            self._answer(404, "not found")

    def _answer(self, status, body):
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubJobServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        _StubJobServer.mode = "token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_token_is_found_where_ray_looks_for_it(tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(GOOD + "\n")
    assert find_token({"HOME": str(tmp_path)}) == (GOOD, str(tmp_path / ".ray" / "auth_token"))
    other = tmp_path / "other_token"
    other.write_text("b" * 32)
    assert find_token({"HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(other)})[0] == "b" * 32
    assert find_token({"HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(other), "RAY_AUTH_TOKEN": "c"})[0] == "c"
    assert find_token({"HOME": str(tmp_path / "fresh")})[0] is None


def test_submission_checks_answer_in_one_line_with_the_fix(stub_server, tmp_path):
    home = {"HOME": str(tmp_path)}
    problem = submission_problem(stub_server, home)
    assert problem.startswith("no Ray auth token") and "ray get-auth-token --generate" in problem
    problem = submission_problem(stub_server, {**home, "RAY_AUTH_TOKEN": "0" * 32})
    assert "refuses the token from RAY_AUTH_TOKEN" in problem
    assert submission_problem(stub_server, {**home, "RAY_AUTH_TOKEN": GOOD}) is None
    assert submission_problem(stub_server.removeprefix("http://"), {**home, "RAY_AUTH_TOKEN": GOOD}) is None
    assert "RAY_AUTH_MODE=disabled" in submission_problem(stub_server, {**home, "RAY_AUTH_MODE": "disabled"})
    nothing = f"http://127.0.0.1:{_free_port()}"
    problem = submission_problem(nothing, home)
    assert problem.startswith(f"nothing answers at {nothing}") and "ray start --head" in problem
    assert "not as a Ray 2.60 dashboard" in submission_problem(f"{stub_server}/elsewhere", home)
    _StubJobServer.mode = "disabled"  # a cluster without token authentication needs no token
    assert submission_problem(stub_server, home) is None
    for text in [submission_problem(stub_server + "/x", home), submission_problem(nothing, home)]:
        assert "\n" not in text


def _make(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MAKE", "MFLAGS"))}
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "NO_ALBUMENTATIONS_UPDATE": "1",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.parametrize("target", ["submit", "submit-status", "submit-logs"])
def test_make_submit_without_a_token_is_one_line(stub_server, tmp_path, target):
    result = _make(target, f"RAY_ADDRESS={stub_server}", "JOB=raysubmit_x", env=_clean_env(tmp_path))
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "no Ray auth token" in lines[0] and "ray get-auth-token --generate" in lines[0]


# --- the recipe on a real head ----------------------------------------------------------------------------

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


def copy_checkout(target: Path) -> Path:
    """The repository's files (tracked and not ignored, mtimes kept) in ``target``, with this checkout's .venv
    linked in: what `make submit` ships stays the same while other people edit the working tree."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


class Head:
    def __init__(self, address: str, env: dict[str, str], checkout: Path):
        self.address, self.env, self.checkout = address, env, checkout

    def run(self, line: str, timeout: float = 420, **extra_env) -> subprocess.CompletedProcess:
        """A recipe line as bash runs it, in the checkout, with this head's environment."""
        return subprocess.run(["bash", "-c", line], cwd=self.checkout, env={**self.env, **extra_env},
                              capture_output=True, text=True, timeout=timeout)

    def ray(self, *args: str, **extra_env) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "ray"), *args], env={**self.env, "RAY_AUTH_MODE": "token", **extra_env},
                              capture_output=True, text=True, timeout=60, cwd=self.checkout)


@pytest.fixture
def recipe_head():
    """The recipe's first two lines, as written, with HOME a fresh temp dir: the token, then the head
    (`--block`, private ports and a temp dir added so that it is this test's own)."""
    lines = recipe_lines()
    # A short root: Ray's unix sockets live under it and socket paths are limited to ~107 characters.
    root = Path(tempfile.mkdtemp(prefix="grit-ray-", dir="/tmp"))
    (root / "home").mkdir()
    head = Head("", _clean_env(root / "home"), copy_checkout(root / "grit"))

    generated = head.run(lines[0], timeout=60)
    token_file = root / "home" / ".ray" / "auth_token"
    assert generated.returncode == 0 and generated.stdout == "", generated.stderr[-2000:]
    token = token_file.read_text()
    assert len(token) >= 32
    assert head.run(lines[0], timeout=60).returncode == 0 and token_file.read_text() == token  # kept after

    dashboard = _free_port()
    extra = [
        "--block", "--node-ip-address", "127.0.0.1", "--port", str(_free_port()), "--num-gpus", "0",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
        "--dashboard-agent-grpc-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
        "--runtime-env-agent-port", str(_free_port()), "--temp-dir", str(root / "ray"), "--disable-usage-stats",
    ]
    log = root / "head.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(["bash", "-c", f"{lines[1]} {' '.join(extra)}"], cwd=head.checkout, env=head.env,
                                   stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    head.address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while True:  # the job server answers once the dashboard is up
            if process.poll() is not None:
                pytest.fail(f"the recipe's ray start exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            probe = head.ray("job", "list", "--address", head.address)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray job server did not come up:\n{probe.stderr[-2000:]}\n{log.read_text()[-2000:]}")
            time.sleep(1)
        yield head
    finally:
        _stop_tree(process)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.ray
def test_the_one_machine_recipe_runs_as_written_and_the_job_equals_a_local_run(recipe_head, tmp_path):
    head, lines = recipe_head, recipe_lines()
    # Token authentication is on: a wrong token is refused by Ray, and by make submit in one line.
    assert head.ray("job", "list", "--address", head.address, RAY_AUTH_TOKEN="0" * 64).returncode != 0
    wrong = head.run(f"make --no-print-directory submit RAY_ADDRESS={head.address}", RAY_AUTH_TOKEN="0" * 64)
    assert wrong.returncode != 0 and len((wrong.stdout + wrong.stderr).strip().splitlines()) == 1
    assert "refuses the token from RAY_AUTH_TOKEN" in wrong.stderr
    fresh_home = tmp_path / "fresh_home"
    fresh_home.mkdir()
    missing = head.run(f"make --no-print-directory submit RAY_ADDRESS={head.address}", HOME=str(fresh_home))
    assert missing.returncode != 0 and len((missing.stdout + missing.stderr).strip().splitlines()) == 1
    assert "no Ray auth token" in missing.stderr and "ray get-auth-token --generate" in missing.stderr

    shards = tmp_path / "shards"
    failed = {"key": "000010009", "caption": "a cup on a table", "image": None, "status": "failed_to_download",
              "error_message": "HTTP Error 404: Not Found"}
    inputs = {"00000": healthy_samples(0, 3), "00001": healthy_samples(1, 2) + [failed]}
    for name, samples in inputs.items():
        write_shard(shards, name, samples)
    out = tmp_path / "grit"

    # make submit as the recipe writes it; this test's head, input and output given after (the last wins)
    submitted = head.run(f"{lines[2]} --no-print-directory RAY_ADDRESS={head.address} INPUT={shards} OUTPUT={out} "
                         f"PIPELINE_ARGS=--no-progress")
    assert submitted.returncode == 0, submitted.stdout[-4000:] + submitted.stderr[-3000:]
    assert "succeeded" in (submitted.stdout + submitted.stderr)
    assert f"INPUT={shards} (command line)" in submitted.stdout  # the settings block
    job = re.search(r"raysubmit_\w+", submitted.stdout + submitted.stderr).group(0)

    status = head.run(f"{lines[3]} --no-print-directory RAY_ADDRESS={head.address}", timeout=60)
    assert status.returncode == 0 and job in status.stdout + status.stderr, status.stderr[-2000:]
    logs = head.run(f"{lines[4].split(' JOB=')[0]} --no-print-directory JOB={job} RAY_ADDRESS={head.address}",
                    timeout=60)
    assert logs.returncode == 0, logs.stderr[-2000:]
    assert "2 shards written" in logs.stdout

    # Every input key is in the build or in the rejects (wherever the layout keeps them), exactly once; the
    # failed download is a reject.
    rows = [row for path in out.rglob("*.parquet") if "key" in pq.read_schema(path).names
            for row in pq.read_table(path, columns=["key", "status"]).to_pylist()]
    assert sorted(r["key"] for r in rows) == sorted(s["key"] for samples in inputs.values() for s in samples)
    assert ("000010009", "download_error") in {(r["key"], r["status"]) for r in rows}

    # The job's build equals a local run's on the same input and settings, file for file.
    local = tmp_path / "local"
    done = subprocess.run([str(VENV_BIN / "python"), "-m", "grit_pipeline", "run", "--input", str(shards),
                           "--output", str(local), "--detector", "demo", "--engine", "local", "--no-progress"],
                          cwd=head.checkout, env=head.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert build_files(out) == build_files(local)

    # The job's driver ran the pipeline on this cluster (its actors are the cluster's), not on a Ray of its own.
    listed = head.ray("list", "actors", "--address", head.address, "--format", "json", "--limit", "1000", "--detail")
    assert listed.returncode == 0, listed.stderr[-2000:]
    classes = {actor["class_name"] for actor in json.loads(listed.stdout)}
    # the stage actors: Ray Data's map workers (plan with a GPU stage) or the fused per-core actors (no GPU)
    assert any("MapWorker" in name or "ExpandWrite" in name for name in classes), classes
