"""Nothing from a file runs code: crafted pickles are refused in one line and their payload never runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from grit_pipeline.safe_load import UnsafeFileError
from tests.fixtures_shards import healthy_samples, write_shard


class _Payload:
    """Unpickling this runs ``touch MARKER`` (what a crafted checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted(path: Path, marker: Path, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 1, "payload": _Payload(marker), **extra}, path)
    return path


def test_a_crafted_training_checkpoint_is_refused_and_its_payload_never_runs(tmp_path):
    from kosmos.checkpoint import CheckpointError, check_state, load_state, rng_state, set_rng_state

    marker = tmp_path / "pwned"
    _crafted(tmp_path / "ckpt" / "state.pt", marker)
    with pytest.raises(CheckpointError, match="refused to load.*could run code"):
        load_state(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="it names posix.system"):  # the driver's check, nothing loaded
        check_state(tmp_path / "ckpt")
    assert not marker.exists()
    # what training itself saves still loads (RNG states included) under weights_only
    torch.save({"rng": [rng_state()], "config": {"lr": 1e-4, "resume": None}}, tmp_path / "ckpt" / "state.pt")
    check_state(tmp_path / "ckpt")
    state = load_state(tmp_path / "ckpt")
    set_rng_state(state["rng"][0])


def test_the_demo_detector_refuses_a_pickle_in_one_line(tmp_path, capsys):
    from grit_pipeline.cli import main

    marker = tmp_path / "pwned"
    evil = _crafted(tmp_path / "evil.pt", marker, format="grit-demo-detector")
    write_shard(tmp_path / "in", "00000", healthy_samples(0, 1))
    code = main(["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--engine", "local",
                 "--no-progress", "--detector", "demo", "--model", str(evil)])
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert code != 0 and "Traceback" not in err and len(errors) == 1 and "refused to load" in errors[0]
    assert not marker.exists()


def test_kosmos_predict_loads_safetensors_only(tmp_path):
    from kosmos.predict import load_model

    marker = tmp_path / "pwned"
    model_dir = tmp_path / "model"
    _crafted(model_dir / "pytorch_model.bin", marker)
    (model_dir / "config.json").write_text('{"model_type": "kosmos-2"}')
    with pytest.raises(UnsafeFileError, match="safetensors weights only"):
        load_model(str(model_dir), torch.device("cpu"))
    assert not marker.exists()


def test_kosmos_train_resume_from_a_crafted_checkpoint_is_one_line(tmp_path, capsys):
    from kosmos.cli import main

    marker = tmp_path / "pwned"
    _crafted(tmp_path / "ckpt" / "state.pt", marker)
    code = main(["train", "--data", str(tmp_path), "--output", str(tmp_path / "run"), "--resume", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err and len(err.splitlines()) == 1 and "refused to load" in err
    assert not marker.exists()


def test_plain_tensor_files_pass_the_check_without_torch_and_anything_else_goes_to_torch(tmp_path):
    """The torch-free fast path accepts only names torch's weights_only accepts; other files get torch's verdict."""
    from collections import Counter, OrderedDict

    from torch._weights_only_unpickler import _get_allowed_globals

    from grit_pipeline.safe_load import PLAIN_TENSOR_GLOBALS, check_torch_file, plain_tensor_file

    assert PLAIN_TENSOR_GLOBALS <= set(_get_allowed_globals())
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": OrderedDict(w=torch.ones(2), n=torch.arange(3)),
                "more": [torch.zeros(1, dtype=dtype) for dtype in (torch.float16, torch.bfloat16, torch.bool,
                                                                   torch.uint8, torch.int8, torch.int32)],
                "p": torch.nn.Parameter(torch.ones(1)), "config": {"lr": 1e-3, "name": "x", "sizes": (1, 2)}}, plain)
    assert plain_tensor_file(plain)
    check_torch_file(plain)
    allowed_elsewhere = tmp_path / "counter.pt"  # on torch's allow-list, not on the fast path's: torch decides
    torch.save({"counts": Counter("aab")}, allowed_elsewhere)
    assert not plain_tensor_file(allowed_elsewhere)
    check_torch_file(allowed_elsewhere)
    evil = _crafted(tmp_path / "evil.pt", tmp_path / "pwned")
    assert not plain_tensor_file(evil)
    with pytest.raises(UnsafeFileError, match="it names posix.system"):
        check_torch_file(evil)
    import zipfile

    with zipfile.ZipFile(tmp_path / "no_version.pt", "w") as archive:  # a pickle without torch's archive around it
        archive.writestr("a/data.pkl", b"\x80\x02}q\x00.")
    assert not plain_tensor_file(tmp_path / "no_version.pt")
    with pytest.raises(UnsafeFileError, match="not a readable torch file"):
        check_torch_file(tmp_path / "no_version.pt")
    (tmp_path / "text.pt").write_text("not a zip")
    assert not plain_tensor_file(tmp_path / "text.pt")
    with pytest.raises(UnsafeFileError, match="not a readable torch file"):
        check_torch_file(tmp_path / "text.pt")
    assert not (tmp_path / "pwned").exists()


def test_the_demo_detectors_driver_check_imports_no_torch():
    """A Ray run's driver checks the demo checkpoint without paying for torch (its workers load it)."""
    import subprocess
    import sys

    code = ("import sys; from grit_pipeline.detectors.base import check_detector; check_detector('demo'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
