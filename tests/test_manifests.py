"""manifests/: the `ray up` config, the runtime env and the KubeRay RayJob parse, validate against what Ray
accepts, and only use `grit run` flags that exist; `make submit` builds a valid, token-authenticated job."""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from grit_pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"


def _load(name: str):
    return yaml.safe_load((MANIFESTS / name).read_text())


def _parse_grit(argv: list[str]):
    """Parse a `grit ...` command line with grit's own parser; argparse exits on an unknown flag."""
    assert argv[0] == "grit", argv
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exit_:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"grit's parser rejects {shlex.join(argv)}") from exit_


def _ray_cluster_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_cluster_yaml_is_a_valid_ray_up_config_with_gpu_workers():
    config = _load("cluster.yaml")
    schema = _ray_cluster_schema()
    jsonschema.validate(config, schema)  # what `ray up` checks
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu-a10g"]["min_wokers"] = 1  # a typo must not pass
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)

    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    gpu_types = {name: node["node_config"]["InstanceType"] for name, node in nodes.items()
                 if re.match(r"(g5|g6|p4d|p4de|p5)\.", node["node_config"]["InstanceType"])}
    assert gpu_types and config["head_node_type"] not in gpu_types
    assert sum(nodes[name].get("max_workers", 0) for name in gpu_types) <= config["max_workers"]
    # the project is installed on every node from the synced checkout, with the cloud filesystems
    assert config["file_mounts"]["~/grit"] == "."
    assert any("pip install" in c and "~/grit" in c and "[cloud]" in c for c in config["setup_commands"])
    # token authentication: every node starts Ray in token mode and gets the token
    assert "~/.ray/auth_token" in config["file_mounts"]
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        starts = [c for c in commands if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts)


def test_runtime_env_is_accepted_by_ray():
    from ray.runtime_env import RuntimeEnv

    env = _load("runtime_env.yaml")
    RuntimeEnv(**env)  # validates the field names and types
    assert (ROOT / env["working_dir"]).resolve() == ROOT  # relative to where `make submit` runs
    assert {".venv", ".git"} <= set(env["excludes"])
    assert env["env_vars"]["NO_ALBUMENTATIONS_UPDATE"] == "1"
    assert all(isinstance(v, str) for v in env["env_vars"].values())  # Ray requires string values


def test_rayjob_has_gpu_workers_token_auth_and_a_valid_grit_entrypoint():
    import ray

    job = _load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    args = _parse_grit(shlex.split(spec["entrypoint"]))
    assert args.command == "run"
    assert args.input.startswith("s3://") and args.output.startswith("s3://")
    assert (args.detector, args.model, args.box_threshold) == ("hf", "IDEA-Research/grounding-dino-base", 0.35)
    assert args.ray_address == "auto"  # the driver joins the cluster the job runs on
    assert args.num_gpus == 1

    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["rayVersion"] == ray.__version__  # the image's Ray must be the Ray that submits
    assert f"rayproject/ray:{ray.__version__}-" in (MANIFESTS / "Dockerfile").read_text()
    workers = cluster["workerGroupSpecs"]
    gpu_groups = [g for g in workers
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0) >= 1]
    assert gpu_groups
    assert args.ground_pool <= sum(g["replicas"] for g in gpu_groups)  # every detector actor gets a GPU
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    # the inline runtime env is the same environment make submit uses
    from ray.runtime_env import RuntimeEnv

    inline = yaml.safe_load(spec["runtimeEnvYAML"])
    RuntimeEnv(**inline)
    assert inline["env_vars"] == _load("runtime_env.yaml")["env_vars"]


def _make_dry_run(*variables: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(["make", "--no-print-directory", "-n", "submit", *variables], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True)
    lines = result.stdout.replace("\\\n", " ").splitlines()
    return next(line for line in lines if "ray job submit" in line)


def test_make_submit_builds_a_token_authenticated_job_with_valid_flags():
    line = _make_dry_run("INPUT=demo_out/shards", "OUTPUT=s3://bucket/grit", "DETECTOR=hf",
                         "MODEL=IDEA-Research/grounding-dino-base", "BOX_THRESHOLD=0.35",
                         "PIPELINE_ARGS=--ground-pool 2 --num-gpus 1")
    words = shlex.split(line)
    assert words[0] == "RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}"  # token auth unless the user says otherwise
    submit = words[1:words.index("--")]
    assert submit[:3] == [".venv/bin/ray", "job", "submit"]
    assert submit[submit.index("--address") + 1] == "http://127.0.0.1:8265"
    assert submit[submit.index("--runtime-env") + 1] == "manifests/runtime_env.yaml"
    args = _parse_grit(words[words.index("--") + 1:])
    assert args.input == str(ROOT / "demo_out" / "shards")  # local paths made absolute
    assert args.output == "s3://bucket/grit"
    assert (args.detector, args.box_threshold, args.ray_address, args.ground_pool) == ("hf", 0.35, "auto", 2)

    other = shlex.split(_make_dry_run("RAY_ADDRESS=http://10.0.0.5:8265"))
    assert other[other.index("--address") + 1] == "http://10.0.0.5:8265"
