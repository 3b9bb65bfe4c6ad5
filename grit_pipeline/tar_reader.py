"""The one reader of webdataset tars: the pipeline's input, the views and the Kosmos-2 loader all use it.

webdataset's conventions (``webdataset.tariterators``): members are grouped into samples by key, the
key being the member path up to the first dot of its file name (``base_plus_ext``; its pattern is
repeated here because importing ``webdataset`` imports torch, about 470 MB in every pipeline worker that
reads a tar, and a test keeps the two equal), extensions lower case, ``__meta__`` members skipped; URLs
are opened with ``webdataset.gopen``. What webdataset's own ``tar_file_iterator`` does not give, and
hostile shards need, lives here:

- Bounded reads: a member larger than ``max_member_bytes`` is skipped from its header, before any of its
  bytes are read (a 20 KiB tar with a GNU sparse member, or a 1 MiB gzip tar, can each declare 1 GiB).
  Tars are always read as a stream (``r|*``), compressed ones included, so skipping costs no memory; a
  header that asks for more metadata than that (a pax or long-name record of gigabytes) ends the shard.
- Safe keys: ``key_problem`` says why a key is not a plain file name (``../x``, ``/etc/x``, control
  characters, over-long); callers turn such keys into ``bad_key`` rejects and never write them.
- One error rule: a shard that cannot be opened, a broken header or a member cut short ends the shard;
  the samples before it are kept, the error and the key it cut off are reported on the reader
  (``TarReader.error`` / ``TarReader.cut_key``), never raised.
- Located members: ``locate(key, ext)`` picks members whose place in the file (``MemberLocation``) is
  recorded instead of their bytes, for a reader that comes back for one member later (an image library
  indexing img2dataset shards). Only in an uncompressed local tar, read with seeks (headers only); a
  compressed tar or a URL is an error of the shard.
"""
from __future__ import annotations

import re
import tarfile
import unicodedata
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

from grit_pipeline.limits import MAX_KEY_BYTES, MAX_MEMBER_BYTES

# Image members, in the order a sample's image is picked when it has several.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
DEFAULT_MAX_MEMBER_BYTES = MAX_MEMBER_BYTES


# webdataset.tariterators.base_plus_ext's pattern: key = path up to the first dot of the file name.
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def split_member(name: str) -> tuple[str | None, str]:
    """webdataset's rule: (key, lower-case extension); (None, "") for a name without one."""
    match = _MEMBER_NAME.match(name)
    if not match:
        return None, ""
    return match.group(1), match.group(2).lower()


def key_problem(key: Any) -> str | None:
    """Why ``key`` is not a safe plain file name (None when it is).

    A key ends up as an output tar member name ``KEY.jpg``: it must not hold a directory part or a path
    that climbs (``/``, ``\\``, ``..``), start with a dot, hold control characters, or be over-long.
    """
    if not isinstance(key, str):
        return f"key is not text ({type(key).__name__})"
    if not key:
        return "empty key"
    if "/" in key or "\\" in key:
        return f"key {key[:80]!r} holds a path separator (keys must be plain file names)"
    if key.startswith("."):
        return f"key {key[:80]!r} starts with a dot"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in key):
        return f"key {key[:80]!r} holds control characters"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"key is {len(key.encode('utf-8', 'surrogatepass'))} bytes long (limit {MAX_KEY_BYTES})"
    return None


@dataclass(frozen=True)
class MemberLocation:
    """Where a member's bytes are in an uncompressed tar: read ``size`` bytes at ``offset`` of ``path``."""

    name: str    # the member's name in the tar, as written (extension case kept)
    path: str
    offset: int
    size: int


@dataclass
class TarSample:
    """Consecutive members of one key: ``files[ext] = bytes``; ``oversize[ext]`` = declared size of a
    member skipped unread; ``duplicates`` = extensions met twice (the first copy is kept); ``located[ext]``
    = where a member picked by ``TarReader(locate=...)`` is (its bytes not read)."""

    key: str
    files: dict[str, bytes] = field(default_factory=dict)
    oversize: dict[str, int] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    located: dict[str, MemberLocation] = field(default_factory=dict)

    def image(self) -> tuple[str, bytes] | None:
        """(extension, bytes) of the sample's image member, in ``IMAGE_EXTENSIONS`` order."""
        ext = next((e for e in IMAGE_EXTENSIONS if e in self.files), None)
        return (ext, self.files[ext]) if ext else None


class TarReader:
    """Iterate the samples of one webdataset tar with bounded member reads.

    ``source`` is a path or URL (opened with webdataset's ``gopen``) or an open binary file object.
    ``wanted(key, ext)`` selects the members to read (others are skipped unread, like oversize ones).
    ``locate(key, ext)`` selects wanted members to record in ``TarSample.located`` instead of reading them
    (any size; ``source`` must then be the path of an uncompressed local tar). After iteration, ``error`` holds what stopped the shard early (None when it was read to its end)
    and ``cut_key`` the key whose member was cut off (that sample is not yielded).
    """

    def __init__(self, source: str | IO[bytes], max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES,
                 wanted: Callable[[str, str], bool] | None = None, locate: Callable[[str, str], bool] | None = None):
        self.source = source
        self.max_member_bytes = max_member_bytes
        self.wanted = wanted
        self.locate = locate
        self.error: str | None = None
        self.exception: BaseException | None = None  # what ``error`` describes (callers tell storage faults apart)
        self.cut_key: str | None = None

    def __iter__(self) -> Iterator[TarSample]:
        current: TarSample | None = None
        member_key = None
        stream = None
        try:
            if self.locate is not None and not (isinstance(self.source, str) and "://" not in self.source
                                                and not self.source.startswith("pipe:")):
                raise ValueError("members can be located only in a local tar file, given by its path")
            if isinstance(self.source, str) and ("://" in self.source or self.source.startswith("pipe:")):
                from webdataset.gopen import gopen  # imports torch: only for URLs

                stream = gopen(self.source, "rb")
            elif isinstance(self.source, str):
                stream = open(self.source, "rb")
            else:
                stream = self.source
            opened = _open_seekable if self.locate is not None else _open_stream
            with opened(stream, self.max_member_bytes) as tar:
                for info in tar:
                    tar.members = []  # stream mode keeps every header otherwise
                    if not info.isreg():
                        continue
                    key, ext = split_member(info.name)
                    if key is None or key.rsplit("/", 1)[-1].startswith("__"):
                        continue
                    if current is not None and current.key != key:
                        yield current
                        current = None
                    if current is None:
                        current = TarSample(key)
                    if self.wanted is not None and not self.wanted(key, ext):
                        continue
                    if ext in current.files or ext in current.oversize or ext in current.located:
                        current.duplicates.append(ext)
                        continue
                    if self.locate is not None and self.locate(key, ext):
                        current.located[ext] = MemberLocation(info.name, self.source, info.offset_data, info.size)
                        continue
                    if self.max_member_bytes is not None and info.size > self.max_member_bytes:
                        current.oversize[ext] = info.size  # skipped from its header: never read
                        continue
                    member_key = key
                    data = tar.extractfile(info).read(info.size)
                    if len(data) != info.size:
                        raise EOFError(f"member {info.name} truncated ({len(data)} of {info.size} bytes)")
                    member_key = None
                    current.files[ext] = data
        except (tarfile.TarError, OSError, EOFError, ValueError, RuntimeError) as error:
            # RuntimeError: webdataset's gopen reports a failed pipe/URL this way.
            self.error = f"{type(error).__name__}: {error}"
            self.exception = error
            if member_key is not None:
                self.cut_key = member_key
                if current is not None and current.key == member_key:
                    current = None  # its member was cut off: the sample is not complete
        finally:
            if stream is not None and stream is not self.source:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001 - closing a failed pipe may raise again
                    pass
        if current is not None:
            yield current


class _BoundedReads:
    """The decompressed tar stream, refusing any single read larger than ``limit`` bytes.

    ``tarfile`` reads a member's data, a pax header or a GNU long name with one ``read(size)`` of the size
    its header declares; members over the limit are skipped (``seek``, in small blocks) before that, so
    only a crafted metadata record can ask for more, and it ends the shard instead of filling memory.
    """

    def __init__(self, stream, limit: int):
        self._stream, self._limit = stream, limit

    def read(self, size=-1):
        if size is None or size < 0 or size > self._limit:
            raise tarfile.ReadError(f"a tar header declares {size} bytes to read at once (limit {self._limit})")
        return self._stream.read(size)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _open_stream(fileobj: IO[bytes], max_member_bytes: int | None) -> tarfile.TarFile:
    """``tarfile.open(fileobj=..., mode="r|*")``, with single reads bounded by ``max_member_bytes``."""
    if max_member_bytes is None or not hasattr(tarfile, "_Stream"):
        return tarfile.open(fileobj=fileobj, mode="r|*")
    # What tarfile.open does for "r|*", with the decompressed stream wrapped (512: one header block).
    stream = tarfile._Stream(None, "r", "*", fileobj, tarfile.RECORDSIZE)
    try:
        tar = tarfile.TarFile(None, "r", _BoundedReads(stream, max(max_member_bytes, 1 << 20) + 512))
    except BaseException:
        stream.close()
        raise
    tar._extfileobj = False
    return tar


def _open_seekable(fileobj: IO[bytes], max_member_bytes: int | None) -> tarfile.TarFile:
    """An uncompressed tar read with seeks (``mode="r:"``: members' data skipped, not read through), with
    single reads bounded as in ``_open_stream``; a compressed tar fails here (``tarfile.ReadError``)."""
    limit = max(max_member_bytes, 1 << 20) + 512 if max_member_bytes is not None else None
    return tarfile.open(fileobj=_BoundedReads(fileobj, limit) if limit else fileobj, mode="r:")
