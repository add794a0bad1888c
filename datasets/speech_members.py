"""Where the Speech Commands clips are: the files of a folder or of the published .tar.gz, and its split lists.

Read as members (name, where to say it is, bytes), with the hostile cases refused before they
cost memory (`SpeechLimits`): an absolute path, a '..' component, a link, a device or a pipe
in an archive, one line each; a file larger than `max_file_bytes` comes without its bytes.
`shoal.datasets.speech_commands` decodes and writes them.
"""

from __future__ import annotations

import functools
import hashlib
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shoal.errors import SourceError
from shoal.lineage import HashingReader, SourceFile
from shoal.sources import folder_files

LISTS = {"validation_list.txt": "valid", "testing_list.txt": "test"}
_FIX_ARCHIVE = "the archive is not the published one; fetch it again with `shoal fetch speech`"


@dataclass(frozen=True)
class SpeechLimits:
    """How long and how large a file of a source may be before it is refused unread (hostile input).

    Attributes:
        max_clip_seconds: the longest keyword clip, judged from the WAV header before its
            samples are decoded; the published clips last at most 1 s.
        max_noise_seconds: the longest `_background_noise_` recording; the published ones
            last 60-95 s.
        max_file_bytes: a larger file (or archive member) is refused without being read; a
            1 s clip is 32 KB, the longest published noise recording 3 MB.
    """

    max_clip_seconds: float = 2.0
    max_noise_seconds: float = 300.0
    max_file_bytes: int = 64 << 20


@dataclass(frozen=True)
class Member:
    """One file of a source: its name inside the dataset, where to say it is, and its bytes."""

    name: str  # "bed/x.wav", relative, "/"-separated
    where: str  # the file, or "archive.tar.gz!bed/x.wav"
    data: bytes
    problem: str | None = None  # why it was not read (too large, unreadable): then `data` is empty

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _tar_stream(source: HashingReader) -> tarfile.TarFile:
    """A streaming tar reader; gzip is inflated with ISA-L (python-isal), ~3x zlib's speed here."""
    if source.raw.peek(2)[:2] == b"\x1f\x8b":
        from isal import igzip

        return tarfile.open(fileobj=igzip.IGzipFile(fileobj=source, mode="rb"), mode="r|")
    return tarfile.open(fileobj=source, mode="r|*")


def _too_large(size: int, limits: SpeechLimits) -> str:
    return (f"{size:,} bytes, more than the {limits.max_file_bytes:,} a clip or noise recording may have "
            "(SpeechLimits.max_file_bytes); not read")


def archive_members(path: Path, failures: list[str], limits: SpeechLimits,
                     sources: dict[Path, SourceFile] | None = None) -> Iterator[Member]:
    """The regular files of a tar archive, streamed; unsafe members are refused (one line each).

    A member larger than `limits.max_file_bytes` comes with its problem and without its
    bytes (the stream skips them). With `sources`, the archive's own sha256 and size are
    recorded there once it is read.
    """
    with path.open("rb") as raw, _tar_stream(hashing := HashingReader(raw)) as archive:
        for info in archive:
            name = info.name.removeprefix("./")
            where = f"{path}!{info.name}"
            parts = PurePosixPath(name).parts
            problem = ("an absolute path" if info.name.startswith("/") else
                       "a '..' component" if ".." in parts else
                       "a link" if info.issym() or info.islnk() else
                       "a device or pipe" if info.isdev() else None)
            if problem is not None:
                failures.append(str(SourceError(where, f"member refused: {problem}", fix=_FIX_ARCHIVE)))
            elif info.isfile() and name and info.size > limits.max_file_bytes:
                yield Member(name, where, b"", problem=_too_large(info.size, limits))
            elif info.isfile() and name:
                handle = archive.extractfile(info)
                yield Member(name, where, handle.read() if handle else b"")
        if sources is not None:
            sources[path] = hashing.source(path)


def folder_members(path: Path, failures: list[str], limits: SpeechLimits, *, follow_links: bool,
                    sources: dict[Path, SourceFile] | None = None) -> Iterator[Member]:
    """Every file of a folder, in sorted order; with `sources`, the folder's manifest entry is recorded there.

    Links, devices and pipes are refused first, one line each in `failures` (links are
    followed with `follow_links`); a file too large or unreadable comes with its problem
    and without its bytes. The manifest lists `sha256  relative/path` of every file read,
    sorted; its sha256 stands for the folder.
    """
    found, refused = folder_files(path, follow_links=follow_links)
    failures.extend(refused)
    lines, size = [], 0
    for file in found:
        name = file.relative_to(path).as_posix()
        try:
            length = file.stat().st_size
            if length > limits.max_file_bytes:
                yield Member(name, str(file), b"", problem=_too_large(length, limits))
                continue
            member = Member(name, str(file), file.read_bytes())
        except OSError as error:
            yield Member(name, str(file), b"", problem=f"cannot read it ({error.strerror})")
            continue
        lines.append(f"{member.sha256}  {member.name}\n")
        size += len(member.data)
        yield member
    if sources is not None:
        sources[path] = SourceFile(path=str(path.resolve()), sha256=hashlib.sha256("".join(lines).encode()).hexdigest(),
                                   bytes=size)


def members(path: Path, failures: list[str], sources: dict[Path, SourceFile], *, follow_links: bool,
             limits: SpeechLimits) -> Iterator[Member]:
    if path.is_dir():
        return folder_members(path, failures, limits, follow_links=follow_links, sources=sources)
    return archive_members(path, failures, limits, sources)


def _list_member(path: Path, name: str, *, follow_links: bool, limits: SpeechLimits) -> Member | None:
    """A list file of a folder, if it is a regular file (a link only with `follow_links`: else its line comes later)."""
    file = path / name
    try:
        info = file.stat() if follow_links else file.lstat()
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size > limits.max_file_bytes:
            return Member(name, str(file), b"", problem=_too_large(info.st_size, limits))
        return Member(name, str(file), file.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as error:
        return Member(name, str(file), b"", problem=f"cannot read it ({error.strerror})")


def split_lists(path: Path, failures: list[str], *, follow_links: bool = False,
           limits: SpeechLimits = SpeechLimits()) -> dict[str, set[str]] | None:
    """The clips of each list file, by split; None when the source has neither list file."""
    found: dict[str, set[str]] = {}
    if path.is_dir():
        members = (m for name in LISTS if (m := _list_member(path, name, follow_links=follow_links, limits=limits)))
    else:  # refusals are reported by the decode pass
        members = (m for m in archive_members(path, [], limits) if m.name in LISTS)
    for member in members:
        if member.problem is not None:  # a list file is no clip: the decode pass skips it without a line
            failures.append(str(SourceError(member.where, member.problem, fix="restore the published list file")))
            continue
        try:
            found[LISTS[member.name]] = {line.strip() for line in member.data.decode("utf-8").splitlines() if line.strip()}
        except UnicodeDecodeError:
            failures.append(str(SourceError(member.where, "not a UTF-8 list of clip paths", fix="restore the published list file")))
        if len(found) == len(LISTS):  # both lists read: the rest of an archive need not be inflated now
            break
    return found or None
