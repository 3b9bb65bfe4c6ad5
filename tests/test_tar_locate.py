"""``TarReader(locate=...)``: members' places in an uncompressed tar instead of their bytes, with the reader's
hardening; and the interleaved source's image library, which indexes img2dataset shards with it."""
from __future__ import annotations

import gzip
import io
import json
import tarfile

from grit_pipeline.tar_reader import IMAGE_EXTENSIONS, MemberLocation, TarReader
from kosmos.sources.interleaved import ImageLibrary


def write_tar(path, members, fmt=tarfile.USTAR_FORMAT):
    with tarfile.open(path, "w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def is_image(key, ext):
    return ext in IMAGE_EXTENSIONS


def test_located_members_read_back_their_bytes_and_the_others_are_read(tmp_path):
    path = tmp_path / "00000.tar"
    write_tar(path, [("a.jpg", b"A" * 700), ("a.json", b'{"k": 1}'), ("b.PNG", b"B" * 10)])
    samples = list(TarReader(str(path), locate=is_image))
    assert [s.key for s in samples] == ["a", "b"]
    assert samples[0].files == {"json": b'{"k": 1}'} and set(samples[0].located) == {"jpg"}
    png = samples[1].located["png"]
    assert isinstance(png, MemberLocation) and png.name == "b.PNG" and png.size == 10
    with open(path, "rb") as f:
        for sample in samples:
            for member in sample.located.values():
                f.seek(member.offset)
                assert f.read(member.size) == {"a.jpg": b"A" * 700, "b.PNG": b"B" * 10}[member.name]


def test_locating_refuses_a_compressed_tar_and_a_url_as_the_shards_error(tmp_path):
    plain = tmp_path / "plain.tar"
    write_tar(plain, [("a.jpg", b"A")])
    packed = tmp_path / "packed.tar"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for source in (str(packed), f"file://{plain}"):
        reader = TarReader(source, locate=is_image)
        assert list(reader) == [] and reader.error, source
    reader = TarReader(str(packed))  # read as a stream, the same tar is fine
    assert [s.files for s in reader] == [{"jpg": b"A"}]


def test_locating_keeps_the_bounded_reads(tmp_path):
    """A pax header that declares more than the limit ends the shard; the samples before it are kept."""
    path = tmp_path / "hostile.tar"
    write_tar(path, [("a.jpg", b"A"), ("b.jpg", b"B")], fmt=tarfile.PAX_FORMAT)
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as archive:
        second = archive.getmembers()[1]
    # b.jpg gets a pax header claiming 2 GiB of records in front of it
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 2 << 30
    header = pax.tobuf(tarfile.USTAR_FORMAT)
    data[second.offset:second.offset] = header
    path.write_bytes(bytes(data))
    reader = TarReader(str(path), max_member_bytes=1 << 20, locate=is_image)
    samples = list(reader)
    assert [s.key for s in samples] == ["a"] and reader.error


def test_the_image_library_indexes_shards_by_member_name_image_name_and_url(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    meta = {"key": "000000000", "image_name": "red.jpg", "url": "https://x/red.jpg"}
    write_tar(shards / "00000.tar", [("000000000.jpg", b"RED"), ("000000000.json", json.dumps(meta).encode()),
                                     ("000000001.jpg", b"BLUE"), ("000000001.json", b"x" * (2 << 20))])
    (shards / "00001.tar").write_bytes(b"not a tar at all" * 64)  # skipped, the other shard still indexed
    library = ImageLibrary(str(shards))
    assert library.get("red.jpg") == library.get("https://x/red.jpg") == library.get("000000000.jpg") == b"RED"
    assert library.get("000000001.jpg") == b"BLUE"  # its 2 MiB json is skipped unread, not its image
    assert library.get("blue.jpg") is None
