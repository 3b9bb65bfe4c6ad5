"""The download stage, for real: img2dataset against a local HTTP server on 127.0.0.1.

The server serves generated JPEG/PNG images, plus urls that 404, return bytes that are not an image,
fail once then work (retries), or answer only after the timeout. A second server stands in as HTTP(S)
proxy for everything not on 127.0.0.1: it must see no request (no wandb, no update checks, ...).
"""
from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from grit_pipeline import download as dl
from grit_pipeline.cli import main as grit_main

SLOW_SECONDS = 2.5
TIMEOUT = 1.0
IMAGE_SIZE = 64

# name -> (format, width, height)
IMAGES = {
    "wide.jpg": ("JPEG", 200, 100),     # downscaled to 128x64 (keep_ratio, shorter side 64)
    "tall.png": ("PNG", 60, 150),       # shorter side 60 < 64: kept as is, re-encoded as JPEG
    "small.jpg": ("JPEG", 40, 30),      # smaller than IMAGE_SIZE: kept as is (no upscaling)
    "rgba.png": ("PNG", 100, 80),       # alpha channel: img2dataset mattes it on white
    "flaky.jpg": ("JPEG", 90, 70),      # 503 on the first request, fine on the second (retries=1)
}


def _image_bytes(fmt: str, width: int, height: int) -> bytes:
    mode = "RGBA" if fmt == "PNG" and width == 100 else "RGB"
    image = Image.new(mode, (width, height), (30, 120, 200, 255)[: len(mode)])
    for x in range(0, width, 7):  # some structure, so it is not a flat colour
        for y in range(height // 3, height // 2):
            image.putpixel((x, y), (250, 40, 10, 255)[: len(mode)])
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1:<free port>, serving from a handler function in a thread."""

    def __init__(self, respond):
        hits: Counter = Counter()
        self.hits = hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                hits[self.path] += 1
                status, body, content_type = respond(self.path, hits[self.path])
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

            do_CONNECT = do_GET  # an https request through the proxy

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _image_server():
    payloads = {f"/img/{name}": _image_bytes(*spec) for name, spec in IMAGES.items()}

    def respond(path, nth):
        if path == "/img/flaky.jpg" and nth == 1:
            return 503, b"try again", "text/plain"
        if path in payloads:
            return 200, payloads[path], "image/png" if path.endswith(".png") else "image/jpeg"
        if path == "/img/broken.jpg":
            return 200, b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10, "image/jpeg"
        if path == "/img/slow.jpg":
            time.sleep(SLOW_SECONDS)
            return 200, payloads["/img/wide.jpg"], "image/jpeg"
        return 404, b"not found", "text/plain"

    return _Server(respond)


@pytest.fixture
def no_outside_network(monkeypatch):
    """Route every non-local HTTP(S) request to a trap server; yields its hit counter."""
    with _Server(lambda path, nth: (502, b"blocked by test", "text/plain")) as trap:
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            monkeypatch.setenv(name, trap.url)
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield trap.hits


# url-list rows: (SAMPLE_ID, path, caption, expected img2dataset status)
ROWS = [
    (101, "/img/wide.jpg", "a red stripe on a blue wall", "success"),
    (102, "/img/missing.jpg", "a dog in a field", "failed_to_download"),
    (103, "/img/tall.png", "a tall blue picture", "success"),
    (104, "/img/broken.jpg", "a broken picture", "failed_to_resize"),
    (105, "/img/slow.jpg", "a slow picture", "failed_to_download"),
    (106, "/img/small.jpg", None, "success"),  # missing caption: downloaded; the pipeline rejects it
    (107, "/img/rgba.png", "a transparent sign", "success"),
    (108, "/img/flaky.jpg", "a flaky server", "success"),
]


def _laion_parquet(path: Path, base_url: str) -> Path:
    table = pa.table({
        "SAMPLE_ID": pa.array([r[0] for r in ROWS], pa.int64()),
        "URL": [base_url + r[1] for r in ROWS],
        "TEXT": [r[2] for r in ROWS],
        "HEIGHT": [100] * len(ROWS),
        "WIDTH": [100] * len(ROWS),
        "LICENSE": ["?"] * len(ROWS),
        "similarity": [0.30 + i / 100 for i in range(len(ROWS))],
    })
    pq.write_table(table, path)
    return path


def _config(**overrides) -> dl.DownloadConfig:
    settings = dict(image_size=IMAGE_SIZE, processes=1, threads=4, timeout=TIMEOUT, retries=1, shard_size=5)
    settings.update(overrides)
    return dl.DownloadConfig(**settings)


def _read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


@pytest.mark.slow
def test_download_laion_parquet_against_local_server(tmp_path, no_outside_network):
    out = tmp_path / "shards"
    with _image_server() as server:
        url_list = _laion_parquet(tmp_path / "laion.parquet", server.url)
        summary = dl.download(str(url_list), str(out), source="laion", config=_config())
        image_hits = sum(server.hits.values())
        # Rerun: every shard has its _stats.json, so nothing is fetched again and the counts are the same.
        again = dl.download(str(url_list), str(out), source="laion", config=_config())
        assert sum(server.hits.values()) == image_hits

    expected = Counter(r[3] for r in ROWS)
    assert summary.complete and summary.shards_expected == 2 and summary.failed_shards == []
    assert summary.count == len(ROWS)
    assert summary.successes == expected["success"] == 5
    assert summary.failed_to_download == expected["failed_to_download"] == 2
    assert summary.failed_to_resize == expected["failed_to_resize"] == 1
    assert again.to_dict() == summary.to_dict()
    assert any("404" in message for message, _ in summary.top_errors)
    assert any("timed out" in message.lower() for message, _ in summary.top_errors)

    # img2dataset layout, nothing else: what `grit run --input` reads.
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar",
                     "00001_stats.json"]
    meta = pa.concat_tables([pq.read_table(out / f"{i:05d}.parquet") for i in range(2)]).to_pylist()
    assert len(meta) == len(ROWS)
    by_id = {row["id"]: row for row in meta}
    assert sorted(by_id) == [r[0] for r in ROWS]  # every url is a row, failures included
    for sample_id, path, caption, status in ROWS:
        row = by_id[sample_id]
        assert row["url"] == server.url + path
        assert row["caption"] == caption
        assert row["status"] == status, (path, row["error_message"])
        assert (row["error_message"] is None) == (status == "success")
        assert row["clip_similarity_vitb32"] == pytest.approx(0.30 + ROWS.index((sample_id, path, caption, status)) / 100)
        assert "LICENSE" not in row and "similarity" not in row
    assert "404" in by_id[102]["error_message"]

    # Successful rows are in the tars; keep_ratio only scales (never pads or crops); no upscaling.
    samples = {}
    for i in range(2):
        samples.update(_read_tar(out / f"{i:05d}.tar"))
    assert set(samples) == {row["key"] for row in meta if row["status"] == "success"}
    sizes = {}
    for row in meta:
        if row["status"] != "success":
            continue
        sample = samples[row["key"]]
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == (row["width"], row["height"])
        assert sample["txt"].decode() == (row["caption"] or "")
        assert json.loads(sample["json"])["id"] == row["id"]
        sizes[row["url"].rsplit("/", 1)[1]] = image.size
    assert sizes == {"wide.jpg": (128, 64), "tall.png": (60, 150), "small.jpg": (40, 30),
                     "rgba.png": (80, 64), "flaky.jpg": (82, 64)}
    assert no_outside_network == Counter()  # nothing tried to reach beyond 127.0.0.1

    # The download folder is exactly what the pipeline reads: failed urls become download_error rejects.
    from grit_pipeline.pipeline import PipelineConfig, layout, run_pipeline

    build = tmp_path / "grit"
    run_pipeline(PipelineConfig(input=str(out), output=str(build), detector="noop", engine="local", progress=False))
    rows = []
    for i in range(2):
        rows += pq.read_table(build / f"{i:05d}.parquet").to_pylist()
        rows += pq.read_table(build / layout.rejects_name(f"{i:05d}")).to_pylist()
    status_of = {row["key"]: row["status"] for row in rows}
    assert len(rows) == len(status_of) == len(ROWS)  # every key exactly once
    by_url = {row["url"].rsplit("/", 1)[1]: status_of[row["key"]] for row in meta}
    assert by_url["missing.jpg"] == by_url["slow.jpg"] == by_url["broken.jpg"] == "download_error"
    assert by_url["small.jpg"] == "bad_caption"
    assert by_url["wide.jpg"] == "grounded"
    grounded = pq.read_table(build / "00000.parquet").to_pylist()
    assert {r["id"] for r in grounded} <= {r[0] for r in ROWS}  # the source id reaches the GRIT record
    assert all(r["clip_similarity_vitb32"] is not None for r in grounded)


@pytest.mark.slow
def test_download_cli_coyo_jsonl_overwrite(tmp_path, no_outside_network):
    out = tmp_path / "coyo_shards"
    (out).mkdir()
    (out / "stale.tar").write_bytes(b"old")
    with _image_server() as server:
        url_list = tmp_path / "coyo.jsonl"
        rows = [
            {"id": 7, "url": server.url + "/img/wide.jpg", "text": "a wide picture", "clip_similarity_vitl14": 0.3,
             "aesthetic_score": 5.5},
            {"id": 8, "url": server.url + "/img/nothing-here.jpg", "text": 42, "clip_similarity_vitl14": 0.2,
             "aesthetic_score": 4.0},
        ]
        url_list.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        code = grit_main(["download", "--input", str(url_list), "--output", str(out), "--source", "coyo",
                          "--keep-cols", "aesthetic_score", "--image-size", str(IMAGE_SIZE), "--processes", "1",
                          "--threads", "2", "--timeout", str(TIMEOUT), "--retries", "0", "--overwrite"])
    assert code == 0
    assert not (out / "stale.tar").exists()
    meta = sorted(pq.read_table(out / "00000.parquet").to_pylist(), key=lambda r: r["id"])  # completion order
    assert [(r["id"], r["status"], r["caption"], r["aesthetic_score"]) for r in meta] == [
        (7, "success", "a wide picture", 5.5), (8, "failed_to_download", "42", 4.0)]
    assert [r["clip_similarity_vitl14"] for r in meta] == [0.3, 0.2]
    assert no_outside_network == Counter()


# --- reading the url list: clear errors, nothing downloaded -------------------------------------------


def test_presets_and_explicit_columns():
    laion = dl.resolve_columns(["URL", "TEXT", "SAMPLE_ID", "similarity", "NSFW"], "laion")
    assert (laion.url, laion.caption, laion.id) == ("URL", "TEXT", "SAMPLE_ID")
    assert laion.extra == (("similarity", "clip_similarity_vitb32"),)
    laion2b = dl.resolve_columns(["URL", "TEXT", "hash", "punsafe"], "laion")
    assert laion2b.id == "hash" and laion2b.output_additional_columns() == ["id"]
    coyo = dl.resolve_columns(["id", "url", "text", "clip_similarity_vitb32", "clip_similarity_vitl14"], "coyo")
    assert coyo.output_additional_columns() == ["id", "clip_similarity_vitb32", "clip_similarity_vitl14"]
    custom = dl.resolve_columns(["link", "alt", "uid", "lang"], "custom", url_col="link", caption_col="alt",
                                id_col="uid", keep_cols=["lang"])
    assert (custom.url, custom.caption, custom.id, custom.extra) == ("link", "alt", "uid", (("lang", "lang"),))
    assert dl.resolve_columns(["URL", "TEXT", "SAMPLE_ID"], "laion", id_col="none").id is None


LAION_COLUMNS = ["URL", "TEXT", "SAMPLE_ID", "width"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(source="coyo"), "no url column 'url'"),
    (dict(source="laion", caption_col="caption"), "no caption column 'caption'"),
    (dict(source="laion", id_col="uid"), "no id column 'uid'"),
    (dict(source="laion", keep_cols=["status"]), "no kept column 'status'"),
    (dict(source="laion", keep_cols=["width"]), "img2dataset or GRIT uses that name"),
    (dict(source="yfcc"), "unknown source"),
])
def test_column_errors_name_the_columns(kwargs, message):
    with pytest.raises(dl.DownloadInputError, match=message) as info:
        dl.resolve_columns(LAION_COLUMNS, **kwargs)
    if message.startswith("no "):
        assert str(LAION_COLUMNS) in str(info.value)  # lists what is there


def test_csv_keeps_captions_as_text_and_parses_ids(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text('URL,TEXT,SAMPLE_ID,similarity\nhttp://x/1.jpg,1984,5,0.31\n'
                    'http://x/2.jpg,"a cat, on a mat",6,\nhttp://x/3.jpg,,7,0.2\n')
    table = dl.read_url_table(str(path))
    columns = dl.resolve_columns(table.column_names, "laion")
    rows = dl.normalise_url_table(table, columns).to_pylist()
    assert rows == [
        {"url": "http://x/1.jpg", "caption": "1984", "id": 5, "clip_similarity_vitb32": 0.31},
        {"url": "http://x/2.jpg", "caption": "a cat, on a mat", "id": 6, "clip_similarity_vitb32": None},
        {"url": "http://x/3.jpg", "caption": None, "id": 7, "clip_similarity_vitb32": 0.2},
    ]


def test_tsv_and_parquet_folder(tmp_path):
    (tmp_path / "list.tsv").write_text("url\tcaption\nhttp://x/1.jpg\ta dog\n")
    table = dl.read_url_table(str(tmp_path / "list.tsv"))
    assert table.to_pylist() == [{"url": "http://x/1.jpg", "caption": "a dog"}]
    folder = tmp_path / "laion"
    folder.mkdir()
    for i in (1, 0):
        pq.write_table(pa.table({"URL": [f"u{i}"], "TEXT": ["t"]}), folder / f"part-{i}.parquet")
    (folder / "README.md").write_text("not a url list")
    assert dl.list_input_files(str(folder)) == [str(folder / "part-0.parquet"), str(folder / "part-1.parquet")]
    # a parquet file is read with only the kept columns
    pq.write_table(pa.table({"URL": ["u"], "TEXT": ["t"], "NSFW": ["no"]}), tmp_path / "one.parquet")
    table = dl.read_url_table(str(tmp_path / "one.parquet"),
                              columns=lambda names: dl.resolve_columns(names, "laion"))
    assert table.column_names == ["URL", "TEXT"]


def test_jsonl_with_mixed_types_is_read(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"url": "http://x/1.jpg", "text": "a dog", "id": 1}\n\n'
                    '{"url": "http://x/2.jpg", "text": ["not", "text"], "id": 2}\n')
    rows = dl.read_url_table(str(path)).to_pylist()
    assert [r["text"] for r in rows] == ["a dog", '["not", "text"]'] and [r["id"] for r in rows] == [1, 2]


@pytest.mark.parametrize("name, content, message", [
    ("bad.parquet", b"PAR1 this is not parquet", "cannot read .* as parquet"),
    ("bad.jsonl", b'{"url": "u"}\n{not json\n', "line 2 is not JSON"),
    ("list.txt", b"http://x/1.jpg\n", "cannot tell the format"),
    ("nothing-here.parquet", None, "does not exist"),
])
def test_unreadable_url_lists(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(dl.DownloadInputError, match=message):
        dl.download(str(path), str(tmp_path / "out"), source="coyo", config=_config())
    assert not (tmp_path / "out" / "_tmp").exists()


def test_non_integer_ids_are_refused_with_a_hint(tmp_path):
    path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"url": ["u"], "caption": ["c"], "id": ["abc"]}), path)
    with pytest.raises(dl.DownloadInputError, match="--id-col none"):
        dl.download(str(path), str(tmp_path / "out"), source="custom", config=_config())
    with pytest.raises(dl.DownloadInputError, match="has no rows"):
        empty = tmp_path / "empty.parquet"
        pq.write_table(pa.table({"url": pa.array([], pa.string()), "caption": pa.array([], pa.string())}), empty)
        dl.download(str(empty), str(tmp_path / "out"), source="custom", config=_config())


def test_cli_reports_input_errors(tmp_path, capsys):
    path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"link": ["u"], "TEXT": ["c"]}), path)
    code = grit_main(["download", "--input", str(path), "--output", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no url column 'URL'" in err and "--url-col" in err and "['link', 'TEXT']" in err


def test_img2dataset_settings_are_grit_safe():
    options = dl.img2dataset_options(dl.DownloadConfig(), "list", "out", ["id"])
    assert options["resize_mode"] == "keep_ratio" and options["output_format"] == "webdataset"
    assert options["enable_wandb"] is False and options["skip_reencode"] is False
    assert options["save_additional_columns"] == ["id"] and options["processes_count"] >= 1
    import inspect

    dl._quiet_third_party_network()
    import img2dataset

    accepted = inspect.signature(img2dataset.download).parameters
    assert set(options) <= set(accepted)  # every setting is one img2dataset knows


@pytest.mark.slow
def test_interrupted_download_exits_130_and_leaves_the_shard_unfinished(tmp_path, no_outside_network):
    import os
    import signal
    import subprocess
    import sys

    def respond(path, nth):
        time.sleep(SLOW_SECONDS)
        return 200, _image_bytes("JPEG", 50, 40), "image/jpeg"

    out = tmp_path / "shards"
    with _Server(respond) as server:
        url_list = tmp_path / "list.parquet"
        pq.write_table(pa.table({"url": [f"{server.url}/img/{i}.jpg" for i in range(6)],
                                 "caption": ["a picture"] * 6}), url_list)
        env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
        process = subprocess.Popen(
            [sys.executable, "-m", "grit_pipeline", "download", "--input", str(url_list), "--output", str(out),
             "--source", "custom", "--processes", "1", "--threads", "1", "--timeout", "10", "--retries", "0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not server.hits and time.monotonic() < deadline:  # downloading has begun
                time.sleep(0.2)
            assert server.hits, "the download never started"
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert not list(out.glob("*_stats.json"))  # not marked finished: a rerun downloads the shard again


def test_only_http_and_https_urls_are_fetched():
    """file: and data: urls would copy local files or inline bytes into the shards: they become failed rows."""
    import urllib.error
    import urllib.request

    from grit_pipeline.download import REFUSED_SCHEME, only_http

    urls = ["http://a.invalid/1.jpg", " HTTPS://a.invalid/2.jpg", "file:///etc/passwd", "data:image/png;base64,AAAA",
            "<URL:file:///etc/hostname>", "ftp://a.invalid/x.jpg", None, "no-scheme.jpg"]
    out = only_http(pa.chunked_array([urls])).to_pylist()
    assert out[:2] == urls[:2] and out[6:] == urls[6:]
    assert out[2:6] == [f"{REFUSED_SCHEME}:{u}" for u in urls[2:6]]
    for refused in out[2:6]:  # what img2dataset's downloader does with them: a failure, never a read
        with pytest.raises(urllib.error.URLError, match=f"unknown url type: {REFUSED_SCHEME}"):
            urllib.request.urlopen(urllib.request.Request(refused), timeout=1)
    plain = pa.chunked_array([["http://a.invalid/1.jpg"]])
    assert only_http(plain) is plain
