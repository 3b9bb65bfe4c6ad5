"""What `make submit` (and `make submit-status` / `submit-logs`) checks before it calls `ray job`: that a Ray
job server answers at the address, and, when that cluster requires token authentication, that this machine
has a token and the cluster accepts it. A problem is one line: what is missing and the command that fixes it.

Ray 2.60 looks for the token in the ``RAY_AUTH_TOKEN`` variable, then the file named by ``RAY_AUTH_TOKEN_PATH``,
then ``~/.ray/auth_token`` (what ``ray get-auth-token --generate`` writes); its CLI sends it only with
``RAY_AUTH_MODE=token`` set, which the Makefile does. Standard library only: the Makefile runs this file with
the system Python before the virtual environment exists, as ``python3 grit_pipeline/submit.py --address URL``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
GENERATE = ".venv/bin/ray get-auth-token --generate"
START_HEAD = "RAY_AUTH_MODE=token .venv/bin/ray start --head --include-dashboard true"


def find_token(environ=os.environ) -> tuple[str | None, str]:
    """(the token, where it came from) in Ray's order; (None, where Ray looked) when there is none."""
    if environ.get("RAY_AUTH_TOKEN", "").strip():
        return environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    if environ.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(environ["RAY_AUTH_TOKEN_PATH"]).expanduser()
        return _read_token(path), f"RAY_AUTH_TOKEN_PATH={path}"
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    path = home / ".ray" / "auth_token"
    return _read_token(path), str(path)


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def job_server_url(address: str) -> str:
    """The job server's HTTP URL for a RAY_ADDRESS as `ray job` takes it (``HOST:PORT`` means http)."""
    address = address.strip().rstrip("/") or DEFAULT_ADDRESS
    return address if "://" in address else f"http://{address}"


def submission_problem(address: str, environ=os.environ, timeout_s: float = 10.0) -> str | None:
    """One line naming what stops a job submission to ``address`` and the command that fixes it; None when
    the job server answers and accepts this machine's token (or needs none)."""
    url = job_server_url(address)
    if not url.startswith(("http://", "https://")):
        return None  # ray://, a cluster of another kind: left to `ray job`
    status, body = _get(f"{url}/api/authentication_mode", {}, timeout_s)
    if status is None:
        return (f"nothing answers at {url} ({body}): start a head on this machine (`{GENERATE}`, then "
                f"`{START_HEAD}`: docs/cluster.md), forward a cluster's dashboard (`ray dashboard "
                f"manifests/cluster.yaml`), or set RAY_ADDRESS=http://HEAD:8265")
    try:
        mode = json.loads(body)["authentication_mode"] if status == 200 else None
    except (ValueError, KeyError, TypeError):
        mode = None
    if mode is None:
        return (f"{url} answers (HTTP {status}) but not as a Ray 2.60 dashboard: set RAY_ADDRESS to the "
                f"head's dashboard/job server, http://HEAD:8265")
    if mode != "token":
        return None
    if environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return (f"the cluster at {url} requires token authentication but RAY_AUTH_MODE="
                f"{environ['RAY_AUTH_MODE']}: unset it (make sets RAY_AUTH_MODE=token)")
    token, where = find_token(environ)
    if token is None:
        return (f"no Ray auth token ({where} missing or empty; RAY_AUTH_TOKEN unset) for the cluster at {url}, "
                f"which requires one: copy the head's ~/.ray/auth_token there (a head started on this machine "
                f"after `{GENERATE}` uses this machine's token)")
    status, body = _get(f"{url}/api/jobs/", {"Authorization": f"Bearer {token}"}, timeout_s)
    if status in (401, 403):
        return (f"the cluster at {url} refuses the token from {where}: use the head's token (its "
                f"~/.ray/auth_token), e.g. RAY_AUTH_TOKEN_PATH=FILE make ...")
    if status is None:
        return f"the job server at {url} stopped answering ({body}); check the head and rerun"
    return None


def _get(url: str, headers: dict[str, str], timeout_s: float) -> tuple[int | None, str]:
    """(HTTP status, body) of a GET; (None, the reason) when nothing answers."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read(65536).decode("utf-8", "replace")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        return None, " ".join(str(reason).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grit_pipeline/submit.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS,
                        help=f"the job server (default: $RAY_ADDRESS, else {DEFAULT_ADDRESS})")
    args = parser.parse_args(argv)
    problem = submission_problem(args.address)
    if problem:
        print(problem)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
