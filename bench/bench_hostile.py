"""Peak memory of a worker reading input shards that declare 1 GiB members, beside a normal shard.

Each case runs in a fresh Python process that imports the pipeline and reads one shard with
``read_input_shard`` (what a pipeline worker does per shard), then reports its peak RSS
(``ru_maxrss``). Cases: a normal shard; a 20 KiB tar whose GNU sparse member declares 1 GiB; a gzip tar
(a few MiB) whose member inflates to 1 GiB; a gzip tar whose pax header record inflates to 1 GiB. ``unbounded_read`` is the same sparse shard read the way a
plain ``tarfile`` loop reads (``extractfile().read()``), for comparison. The gallery's image read
(``views.dataset.read_images``) on the sparse tar is measured too.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3

_READ = """
import json, resource, sys
sys.path.insert(0, {repo!r})
from grit_pipeline.pipeline.ingest import list_input_shards, read_input_shard
from grit_pipeline.views.dataset import ViewSample, read_images
mode, folder = sys.argv[1], sys.argv[2]
if mode == "ingest":
    for shard in list_input_shards(folder):
        samples = read_input_shard(shard)
    detail = sorted({{(s["status"] or "pending") for s in samples}})
elif mode == "gallery":
    sample = ViewSample(key="big", status="grounded", image_tar=folder + "/00000.tar")
    detail = sorted(k for _, k in read_images([sample]))
else:  # unbounded: what a plain tarfile loop does
    import tarfile
    with tarfile.open(folder + "/00000.tar", mode="r|*") as tar:
        detail = [len(tar.extractfile(m).read()) for m in tar if m.isfile()]
print(json.dumps({{"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "detail": detail}}))
"""


def _measure(mode: str, folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _READ.format(repo=str(REPO)), mode, str(folder)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    sys.path.insert(0, str(REPO))
    from tests.fixtures_shards import healthy_samples, write_shard
    from tests.hostile_shards import gzip_tar_declaring, sparse_member, tar_bytes

    with tempfile.TemporaryDirectory(prefix="grit-bench-hostile-") as tmp:
        tmp = Path(tmp)
        write_shard(tmp / "normal", "00000", healthy_samples(0, 20))
        (tmp / "sparse").mkdir()
        (tmp / "sparse" / "00000.tar").write_bytes(
            tar_bytes([("big.txt", b"a dog on a mat"), sparse_member("big.jpg", GIB)]))
        (tmp / "gzip").mkdir()
        (tmp / "gzip" / "00000.tar").write_bytes(gzip_tar_declaring("big.jpg", GIB))
        (tmp / "pax").mkdir()
        (tmp / "pax" / "00000.tar").write_bytes(gzip_tar_declaring("././@PaxHeader", GIB, kind=tarfile.XHDTYPE))
        sizes = {name: (tmp / name / "00000.tar").stat().st_size for name in ("normal", "sparse", "gzip", "pax")}
        normal = _measure("ingest", tmp / "normal")
        sparse = _measure("ingest", tmp / "sparse")
        gzipped = _measure("ingest", tmp / "gzip")
        pax = _measure("ingest", tmp / "pax")
        gallery = _measure("gallery", tmp / "sparse")
        unbounded = _measure("unbounded", tmp / "sparse")
    return {
        "tar_bytes": sizes,
        "normal_shard_peak_rss_mb": normal["peak_rss_mb"],
        "sparse_1gib_member_peak_rss_mb": sparse["peak_rss_mb"],
        "gzip_1gib_member_peak_rss_mb": gzipped["peak_rss_mb"],
        "gzip_1gib_pax_header_peak_rss_mb": pax["peak_rss_mb"],
        "gallery_read_sparse_peak_rss_mb": gallery["peak_rss_mb"],
        "statuses": {"sparse": sparse["detail"], "gzip": gzipped["detail"], "pax": pax["detail"]},
        "excess_over_normal_mb": round(max(sparse["peak_rss_mb"], gzipped["peak_rss_mb"], pax["peak_rss_mb"])
                                       - normal["peak_rss_mb"], 1),
        "unbounded_read_sparse_peak_rss_mb": unbounded["peak_rss_mb"],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
