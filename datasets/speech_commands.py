"""Google Speech Commands (the v0.01 layout) into the Delta tables `speech` and `speech_noise`.

The input is the published layout, as a folder or as `speech_commands_v0.01.tar.gz` read as a
stream (never unpacked): one folder per word with clips `<speaker>_nohash_<n>.wav`,
`validation_list.txt` and `testing_list.txt` at the top, and `_background_noise_/` with long
noise recordings, which go to `speech_noise` and are never a class.

Split: from the list files when the source has them (listed in validation_list.txt -> valid,
in testing_list.txt -> test, else train); otherwise the rule the lists were made with
(Warden 2018, TensorFlow's `input_data.which_set`): the SHA-1 of the file name without
`_nohash_.*`, mapped to a percentage over 2^27 - 1 buckets, below 10 valid, below 20 test.
Both keep a speaker's clips on one side. An archive is read up to its list files first
(they may come after the clips), then once to decode.

Every clip becomes 16 kHz mono int16: another rate is resampled with soxr, more channels are
averaged, and the row keeps the file's own rate and channel count. A clip already in the
table with the same sha256 is unchanged; new clips are appended in ONE commit per table, their
Parquet files encoded by threads while the stream goes on (`Catalog.write_streamed`); with a
Dask client (`--cluster`), the workers decode and write the clips of folders, a shard each.
Bad clips (empty, corrupt, not WAV, outside a word folder) and refused archive members
(absolute paths, `..`, links, devices) get one line each; the good clips still land. A
folder is opened as `shoal.sources.folder_files` opens it: links, devices and pipes in it
are refused with one line each (links are read with `follow_links`, `--follow-links`).
Hostile sizes are refused before they cost memory (`SpeechLimits`): a file larger than
`max_file_bytes` is not read, and a clip longer than `max_clip_seconds` (noise: longer than
`max_noise_seconds`) is refused from its header, before its samples are decoded.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from shoal.commit_stats import Columns, arrow_stats, merge_columns
from shoal.datasets.speech_members import Member, SpeechLimits, members, split_lists
from shoal.errors import SourceError
from shoal.lineage import Provenance, SourceFile
from shoal.rules import Rules, problems
from shoal.sources import FileDone, IngestReport, check_path, folder_files, no_progress, register_source

if TYPE_CHECKING:
    from distributed import Client, Future

    from shoal.catalog import Catalog

DATASET = "speech"
NOISE = "speech_noise"
# `shoal fetch speech`: the v0.01 archive (Warden 2017, CC BY 4.0), about 1.4 GB, 64,727 clips.
SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz"
SAMPLE_RATE = 16_000
# v0.01's 30 words in alphabetical order, then v0.02's five new ones: label_index is the
# position here, the same in every catalog and every release.
WORDS = ("bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy", "house", "left", "marvin",
         "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up",
         "wow", "yes", "zero", "backward", "follow", "forward", "learn", "visual")
SPLITS = ("train", "valid", "test")
NOISE_FOLDER = "_background_noise_"
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # the hash rule's buckets (TensorFlow speech_commands/input_data.py)
CLIP_NAME = re.compile(r"(?P<speaker>[^_/]+)_nohash_(?P<utterance>\d+)\.wav")
BATCH = 512  # clips per record batch written: ~16 MB of waveforms
FILE_BYTES = 16 << 20  # one batch per Parquet file: the files of a stream are encoded while it goes on
_AUDIO = [("sample_rate", pa.int32()), ("source_sample_rate", pa.int32()), ("source_channels", pa.int8()),
          ("n_samples", pa.int32()), ("sha256", pa.string()), ("waveform", pa.list_(pa.int16()))]
SCHEMA = pa.schema([
    ("clip_id", pa.string()),  # the path inside the dataset, e.g. "bed/026290a7_nohash_0.wav"
    ("label", pa.string()), ("label_index", pa.int16()), ("speaker_id", pa.string()), ("utterance", pa.int32()),
    ("split", pa.string()),  # train / valid / test
    *_AUDIO,  # sample_rate: of `waveform`, always 16 kHz; source_*: of the file; sha256: of the file's bytes
])
NOISE_SCHEMA = pa.schema([("name", pa.string()), *_AUDIO])
_FIX_LAYOUT = "expected the Speech Commands layout: <word>/<speaker>_nohash_<n>.wav"
_FIX_WAV = "replace it with a 16 kHz mono 16-bit PCM WAV, or remove it"
_EXPECTED = "the dataset folder or speech_commands_v0.01.tar.gz"
# What every clip is. A file at another rate or with more channels is converted (resampled, averaged), so the rate is
# what is stored, not a refusal; a file's samples, as float, must be in -1 .. 1 with no NaN: a float WAV beyond that
# would be clipped (or, NaN, turned into noise) on the way to int16. How long a clip may be is `SpeechLimits`' (judged
# from the header before decoding, and raised per call).
RULES = Rules(ranges={"samples": (-1.0, 1.0)}, max_nan_fraction={"samples": 0.0}, sample_rate=SAMPLE_RATE, fix=_FIX_WAV)


def speaker(clip_id: str) -> str:
    """The speaker of a clip: its file name up to `_nohash_` (`yes/0a7c2a8d_nohash_0.wav` -> `0a7c2a8d`)."""
    return re.sub(r"_nohash_.*$", "", clip_id.rsplit("/", 1)[-1])


def hash_split(clip_id: str, *, validation: float = 10.0, testing: float = 10.0) -> str:
    """The dataset authors' split rule for one clip: "train", "valid" or "test"."""
    bucket = int(hashlib.sha1(speaker(clip_id).encode()).hexdigest(), 16) % (MAX_NUM_WAVS_PER_CLASS + 1)
    percentage = bucket * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    return "valid" if percentage < validation else "test" if percentage < validation + testing else "train"


def list_split(clip_id: str, lists: dict[str, set[str]]) -> str:
    """The split the official list files give a clip: valid, test, or train when in neither."""
    return next((split for split, clips in lists.items() if clip_id in clips), "train")


def decode(data: bytes, *, max_seconds: float | None = None) -> tuple[np.ndarray, int, int]:
    """A WAV file's bytes -> (16 kHz mono int16 samples, the file's rate, its channels).

    Args:
        data: the file's bytes.
        max_seconds: the longest a recording may last, judged from its header before any
            sample is decoded; None: no limit.

    Raises:
        ValueError: empty, not a WAV, unreadable, too long, without samples, or float samples that break
            RULES (the message says which).
    """
    import soundfile as sf

    if not data:
        raise ValueError("the file is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            if audio.format not in ("WAV", "WAVEX"):
                raise ValueError(f"not a WAV file (libsndfile reads it as {audio.format})")
            rate, channels = audio.samplerate, audio.channels
            if max_seconds is not None and audio.frames > max_seconds * rate:
                raise ValueError(f"{audio.frames / rate:,.1f} s long, more than the {max_seconds:g} s allowed "
                                 "(SpeechLimits: cut the recording, or raise the limit)")
            if rate == SAMPLE_RATE and channels == 1 and audio.subtype == "PCM_16":
                samples = audio.read(dtype="int16")
            else:
                samples = audio.read(dtype="float32", always_2d=True).mean(axis=1)
    except sf.LibsndfileError as error:
        raise ValueError(f"not a readable WAV file (libsndfile: {error.error_string})") from None
    if len(samples) == 0:
        raise ValueError("the WAV holds no samples")
    if samples.dtype != np.int16:  # 16-bit PCM is within -1 .. 1 (as float) by its format; floats need the rules
        from shoal.stats import RunningStats

        if broken := problems(RULES, stats={"samples": RunningStats.from_values(samples, axis=None)}):
            raise ValueError("; ".join(broken))
        if rate != RULES.sample_rate:
            import soxr

            samples = soxr.resample(samples, rate, RULES.sample_rate)
        samples = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    return samples, rate, channels


@dataclass
class _Outcome:
    """What one ingest call found, beside the rows it writes."""

    failures: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    noise: list[tuple[Member, tuple[np.ndarray, int, int], str]] = field(default_factory=list)


def _skipped(name: str) -> bool:
    """Files of the layout that are no clips (LICENSE, README, the lists) and hidden files."""
    parts = name.split("/")
    return any(part.startswith(".") for part in parts) or (len(parts) == 1 and not name.endswith(".wav")) or (
        len(parts) == 2 and parts[0] == NOISE_FOLDER and not name.endswith(".wav"))


def _classify(member: Member) -> str | None:
    """Why a member is not a clip of the layout, or None when it is one (or noise)."""
    parts = member.name.split("/")
    if len(parts) == 2 and parts[0] == NOISE_FOLDER:
        return None
    if len(parts) != 2:
        return str(SourceError(member.where, "a file outside a word folder", fix=_FIX_LAYOUT))
    if parts[0] not in WORDS:
        return str(SourceError(member.where, f"unknown word folder {parts[0]!r} (known: {', '.join(WORDS)})",
                               fix=_FIX_LAYOUT))
    if not parts[1].endswith(".wav"):
        return str(SourceError(member.where, "not a .wav file in a word folder", fix=_FIX_WAV))
    if not CLIP_NAME.fullmatch(parts[1]):
        return str(SourceError(member.where, "a clip name not of the form <speaker>_nohash_<n>.wav", fix=_FIX_LAYOUT))
    return None


Candidate = tuple[Member, str, str]  # a new clip or noise file, its split, its sha256


def _decoded(candidate: Candidate, limits: SpeechLimits) -> tuple[np.ndarray, int, int] | str:
    """The candidate's samples, or the problem that stops it (a recording too long: from its header)."""
    member = candidate[0]
    noise = member.name.startswith(f"{NOISE_FOLDER}/")
    try:
        return decode(member.data, max_seconds=limits.max_noise_seconds if noise else limits.max_clip_seconds)
    except ValueError as error:
        return str(error)


def _audio_columns(decoded: Sequence[tuple[Member, tuple[np.ndarray, int, int]]], hashes: Sequence[str]) -> dict[str, pa.Array]:
    waves = [samples for _, (samples, _, _) in decoded]
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in waves])]).astype(np.int32)
    return {
        "sample_rate": pa.array([SAMPLE_RATE] * len(decoded), pa.int32()),
        "source_sample_rate": pa.array([rate for _, (_, rate, _) in decoded], pa.int32()),
        "source_channels": pa.array([channels for _, (_, _, channels) in decoded], pa.int8()),
        "n_samples": pa.array([len(w) for w in waves], pa.int32()),
        "sha256": pa.array(hashes, pa.string()),
        "waveform": pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(waves), pa.int16())),
    }


def _clip_batch(decoded: Sequence[tuple[Member, tuple[np.ndarray, int, int]]], splits: Sequence[str],
                hashes: Sequence[str]) -> pa.RecordBatch:
    words, files = zip(*(m.name.split("/") for m, _ in decoded), strict=True)
    found = [CLIP_NAME.fullmatch(file) for file in files]
    columns = {
        "clip_id": pa.array([m.name for m, _ in decoded], pa.string()),
        "label": pa.array(words, pa.string()),
        "label_index": pa.array([WORDS.index(word) for word in words], pa.int16()),
        "speaker_id": pa.array([f["speaker"] for f in found], pa.string()),
        "utterance": pa.array([int(f["utterance"]) for f in found], pa.int32()),
        "split": pa.array(splits, pa.string()),
        **_audio_columns(decoded, hashes),
    }
    return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


def _stored(catalog: Catalog, name: str, key: str) -> dict[str, str]:
    """{clip_id or noise name: sha256} of what the table holds already."""
    if not catalog.exists(name):
        return {}
    frame = catalog.scan_table(name).select(key, "sha256").collect()
    return dict(zip(frame[key].to_list(), frame["sha256"].to_list(), strict=True))


class _Clips:
    """The new clips of some sources as record batches, decoded as they stream by.

    `batches` decodes in this process: decoding is ~0.2 ms a clip, and writing the waveforms
    to Parquet costs several times that; worker processes that only decoded made the whole
    ingest slower here (BENCHMARKS.md). `spread` gives a Dask cluster both: its workers
    decode a shard of clips and write it.
    """

    def __init__(self, paths: Sequence[Path], *, stored: dict[str, str], outcome: _Outcome, done: FileDone,
                 follow_links: bool, limits: SpeechLimits) -> None:
        self.paths, self.stored, self.outcome, self.done = paths, dict(stored), outcome, done
        self.follow_links, self.limits = follow_links, limits
        self.sources: dict[Path, SourceFile] = {}  # each path's lineage entry, once it is read
        self.stats: Columns | None = None  # of the rows `spread`'s workers wrote, once they are all written
        self._folder = False  # whether the path being read is a folder

    def _candidates(self, path: Path, lists: dict[str, set[str]] | None) -> Iterator[Candidate]:
        """Members that are new clips (or noise) with their split; everything else is accounted for here.

        A source that turns out to hold no .wav file, and has had no line of its own, gets one.
        """
        lines, wavs = len(self.outcome.failures), 0
        for member in members(path, self.outcome.failures, self.sources, follow_links=self.follow_links,
                               limits=self.limits):
            if _skipped(member.name):
                continue
            wavs += member.name.endswith(".wav")
            if (problem := _classify(member)) is not None:
                self.outcome.failures.append(problem)
                self._tick(member)
                continue
            if member.problem is not None:
                self.outcome.failures.append(str(SourceError(member.where, member.problem, fix=_FIX_WAV)))
                self._tick(member)
                continue
            sha256 = member.sha256
            known = self.stored.get(member.name)
            if known == sha256:
                self.outcome.unchanged.append(member.where)
                self._tick(member)
            elif known is not None:
                self.outcome.failures.append(str(SourceError(
                    member.where, f"{member.name} is already in the catalog with sha256 {known[:12]}…, this file has "
                    f"{sha256[:12]}…", fix="clips are immutable: give a changed recording a new name")))
                self._tick(member)
            else:
                self.stored[member.name] = sha256  # a second copy in the same call is "unchanged"
                yield member, list_split(member.name, lists) if lists else hash_split(member.name), sha256
        if not wavs and len(self.outcome.failures) == lines:
            self.outcome.failures.append(str(SourceError(
                path, "holds no clips (no <word>/<speaker>_nohash_<n>.wav file)", fix=f"pass {_EXPECTED}")))

    def _tick(self, member: Member) -> None:
        """Progress: each WAV of a folder is a step (an archive is one step, at its end)."""
        if self._folder and member.name.endswith(".wav"):
            self.done(member.where)

    def _settle(self, candidate: Candidate, result: tuple[np.ndarray, int, int] | str) -> bool:
        """Record a decoded candidate's failure, or keep it as noise; True for a clip to write."""
        member, _, sha256 = candidate
        if isinstance(result, str):
            self.outcome.failures.append(str(SourceError(member.where, result, fix=_FIX_WAV)))
            return False
        if member.name.startswith(f"{NOISE_FOLDER}/"):
            self.outcome.noise.append((member, result, sha256))
            return False
        self.outcome.committed.append(member.where)
        return True

    def batches(self, lists: dict[Path, dict[str, set[str]] | None]) -> Iterator[pa.RecordBatch]:
        """Record batches of up to BATCH new clips; failures and noise go to the outcome."""
        for path in self.paths:
            self._folder = path.is_dir()
            clips, splits, hashes = [], [], []
            for candidate in self._candidates(path, lists[path]):
                (member, split, sha256), result = candidate, _decoded(candidate, self.limits)
                if self._settle(candidate, result):
                    clips.append((member, result))
                    splits.append(split)
                    hashes.append(sha256)
                self._tick(member)
                if len(clips) == BATCH:
                    yield _clip_batch(clips, splits, hashes)
                    clips, splits, hashes = [], [], []
            if clips:
                yield _clip_batch(clips, splits, hashes)
            if not self._folder:
                self.done(str(path))


    def spread(self, client: Client, lists: dict[Path, dict[str, set[str]] | None], folder: Path) -> list[Path]:
        """The new clips of folders decoded and written by `client`'s workers, a shard of BATCH clips a file.

        This process hashes, checks and splits every file (and decodes the few noise
        recordings); each worker reads its shard's files again, decodes them and writes one
        Parquet file into `folder`. The outcome (lines and their order) is that of `batches`.
        """
        folder.mkdir(parents=True, exist_ok=True)
        shards: list[tuple[list[Candidate], list[int], Future]] = []
        shard: list[Candidate] = []
        places: list[int] = []  # where in outcome.failures each clip's decode failure would be, in one process

        def submit() -> None:
            items = [(member.name, member.where, split, sha256) for member, split, sha256 in shard]
            target = folder / f"shard-{len(shards):05d}.parquet"
            shards.append((shard, places, client.submit(_write_shard, items, target, self.limits, pure=False)))

        for path in self.paths:
            self._folder = True
            for candidate in self._candidates(path, lists[path]):
                member = candidate[0]
                if member.name.startswith(f"{NOISE_FOLDER}/"):
                    self._settle(candidate, _decoded(candidate, self.limits))
                else:
                    shard.append((replace(member, data=b""), *candidate[1:]))  # the worker reads the file again
                    places.append(len(self.outcome.failures))
                    if len(shard) == BATCH:
                        submit()
                        shard, places = [], []
                self._tick(member)
        if shard:
            submit()
        late, files = [], []
        self.stats = {}
        for candidates, at, future in shards:  # in shard order: a rerun stores the same statistics
            problems, target, stats = future.result()
            self.stats = merge_columns(self.stats, stats)
            for candidate, place, problem in zip(candidates, at, problems, strict=True):
                if problem is None:
                    self.outcome.committed.append(candidate[0].where)
                else:
                    late.append((place, str(SourceError(candidate[0].where, problem, fix=_FIX_WAV))))
            files += [Path(target)] if target else []
        for place, line in reversed(late):
            self.outcome.failures.insert(place, line)
        return files


def _write_shard(items: list[tuple[str, str, str, str]], target: Path,
                 limits: SpeechLimits) -> tuple[list[str | None], str | None, Columns]:
    """On a worker: decode a shard of clips (name, file, split, sha256) and write the good ones as one Parquet file.

    Returns:
        Per clip, None or what stops it; the file written (None when no clip decoded); the
        statistics of its rows, summarized while they are in memory.
    """
    from shoal.tables import write_parquet

    decoded, splits, hashes, problems = [], [], [], []
    for name, where, split, sha256 in items:
        candidate = (Member(name, where, Path(where).read_bytes()), split, sha256)
        result = _decoded(candidate, limits)
        problems.append(result if isinstance(result, str) else None)
        if not isinstance(result, str):
            decoded.append((candidate[0], result))
            splits.append(split)
            hashes.append(sha256)
    if not decoded:
        return problems, None, {}
    table = pa.Table.from_batches([_clip_batch(decoded, splits, hashes)])
    write_parquet(table, str(target))
    return problems, str(target), arrow_stats(table)


def expand(paths: Sequence[Path], *, follow_links: bool = False) -> list[Path]:
    """What a progress bar counts: each WAV of a folder (as the ingest opens it), and each archive as one step."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append(path)
            continue
        files, _ = folder_files(path, follow_links=follow_links)
        found += [p for p in files if p.name.endswith(".wav") and not _skipped(p.relative_to(path).as_posix())]
    return found


def _write_noise(catalog: Catalog, outcome: _Outcome, sources: tuple[SourceFile, ...]) -> None:
    stored = _stored(catalog, NOISE, "name")
    new = [(m, r, sha) for m, r, sha in outcome.noise if stored.get(m.name) != sha]
    fresh = {m.name for m, _, _ in new}
    outcome.unchanged.extend(m.where for m, _, _ in outcome.noise if m.name not in fresh)
    if not new:
        return
    columns = {"name": pa.array([m.name for m, _, _ in new], pa.string()),
               **_audio_columns([(m, r) for m, r, _ in new], [sha for _, _, sha in new])}
    batch = pa.RecordBatch.from_pydict(columns, schema=NOISE_SCHEMA)
    catalog.write_table(NOISE, pa.Table.from_batches([batch]), mode="append", provenance=Provenance(
        sources=sources, parameters={"source": "speech", "files": [m.name for m, _, _ in new]},
        message=f"ingest {len(new)} background noise recording(s)"))
    outcome.committed.extend(m.where for m, _, _ in new)


def _check_paths(paths: Sequence[Path], failures: list[str], done: FileDone) -> list[Path]:
    good = []
    for path in map(Path, paths):
        if (problem := check_path(path, folders=True, expected=_EXPECTED)) is None and (
                path.is_dir() or tarfile.is_tarfile(path)):
            good.append(path)
        else:
            failures.append(str(problem or SourceError(path, "not a folder nor a tar archive",
                                                       fix=f"pass {_EXPECTED}")))
            done(str(path))
    return good


@register_source("speech", dataset=DATASET, expand=expand, spreads=True,
                 description="Speech Commands (v0.01 layout): a folder or the .tar.gz, streamed")
def ingest(catalog: Catalog, paths: Sequence[Path], *, progress: FileDone | None = None,
           client: Client | None = None, follow_links: bool = False,
           limits: SpeechLimits = SpeechLimits()) -> IngestReport:
    """Ingest Speech Commands folders or archives: new clips into `speech`, noise into `speech_noise`.

    Args:
        catalog: the catalog.
        paths: dataset folders and/or tar archives (`.tar.gz` as published).
        progress: called once per WAV of a folder and once per archive, when done with it.
        client: a Dask client whose workers decode and write the clips of folders, a shard
            of BATCH a task (the same rows and lines as without one); archives, one
            stream each, are read here.
        follow_links: read what links in a folder point to (a file, or a folder walked in
            turn) under the link's own name; without it each link is refused with one line.
        limits: the longest clip and noise recording, and the largest file read.
    """
    done = progress or no_progress
    outcome = _Outcome()
    good = _check_paths(paths, outcome.failures, done)
    lists = {path: split_lists(path, outcome.failures, follow_links=follow_links, limits=limits) for path in good}
    rules = {str(path): "lists" if found else "hash" for path, found in lists.items()}
    clips = _Clips(good, stored=_stored(catalog, DATASET, "clip_id"), outcome=outcome, done=done,
                   follow_links=follow_links, limits=limits)

    def provenance() -> Provenance:  # after the stream: every source has been read and hashed
        return Provenance(sources=tuple(clips.sources[p] for p in good), parameters={"source": "speech", "split_rule": rules},
                          message=f"ingest Speech Commands from {', '.join(p.name for p in good)}")

    if client is not None and good and all(path.is_dir() for path in good):
        version = catalog.write_files(DATASET, lambda folder: clips.spread(client, lists, folder), schema=SCHEMA,
                                      provenance=provenance, stats=lambda: clips.stats)
    else:
        version = catalog.write_streamed(DATASET, clips.batches(lists), schema=SCHEMA, provenance=provenance,
                                          file_bytes=FILE_BYTES)
    _write_noise(catalog, outcome, provenance().sources)
    if version is None and catalog.exists(DATASET):
        version = catalog.latest_version(DATASET)
    return IngestReport(DATASET, version, committed=tuple(outcome.committed), unchanged=tuple(outcome.unchanged),
                        failures=tuple(outcome.failures))


def read_split_lists(folder: Path) -> dict[str, set[str]]:
    """The official list files of a dataset folder, by split (for checks against `hash_split`)."""
    return split_lists(Path(folder), []) or {}
