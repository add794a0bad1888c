"""Speech Commands: ingest of 3,000 WAVs, spectrogram features, CNN training throughput.

Data: 3,000 byte copies of the 300 real clips under new names (`write_bench_clips`), as a
folder and as a `.tar.gz` packed like the published archive, cached in `bench/.out/speech/`.

- Ingest. Ours: `shoal ingest speech` into a fresh catalog (sha256 of every clip, layout and
  split checks, decoding, Parquet files written as the stream goes, one Delta commit with the
  lineage). Baseline, like for like: a plain one-process loop that reads each file, hashes
  it, decodes it (`speech_commands.decode`) and writes the SAME Parquet (the same columns,
  built by the same function, 512 clips a file, pyarrow), one step after the other — what a
  user would write without shoal, minus the checks and the commit. Target >= 1.2x on 2 cores
  (ours overlaps decoding and encoding). Three interleaved repeats.
- Spectrograms. Ours: the loader's on-the-fly path (`SpeechClips.gather`: int16 -> float,
  pad / crop, `torch.stft`, window normalization, power, log, per-bin normalization) over the
  3,000 clips in batches of 256. Baseline, like for like: bare torch doing the same steps on
  the same int16 batches (float / 32768, `torch.stft` with the normalized window, |X|^2,
  log(x + 0.01), (x - mean) / std per bin). Target >= 0.9x. Five interleaved repeats.
- Training. Ours: `shoal.models.train.train` for one epoch cut at `BATCHES` batches of 32
  (seeded shuffle, validation over 32 clips, checkpoints), Adadelta as the analysis. Baseline:
  a bare PyTorch loop over the same clips, model, loss and optimizer. Three interleaved
  repeats, on the device `auto` picks.

History. Until 2026-12-06 the baselines were not like for like: the ingest was compared with
a loop that only decoded (0.29x folder, 0.16x tar.gz: they said nothing about waste), and
the spectrograms with a bare `torch.stft` (0.35x). What brought the ingest there, and stays:
Parquet files encoded by two threads while the stream goes on (pyarrow releases the GIL),
committed to Delta in one transaction at the end (`Catalog.write_streamed`), each file hashed
once, gzip inflated with ISA-L, and an archive's list-file pass stopping once both lists are
read. Tried and dropped: decoding in worker processes (slower: 4.6-5.1 s against 4.1-4.3 s),
Parquet without dictionary encoding (twice as fast to write, twice the size). Against the
like-for-like baselines, over three runs on 2 idle cores, the folder ingest was 1.29-1.50x the
plain loop (overlapping decoding and encoding) and the archive 1.07-1.23x, around its 1.2x
target (tarfile's per-member Python work is the same on both sides, and an archive whose list
files come after the clips costs shoal a second pass); the repeats' spreads overlap. The first
like-for-like spectrogram run was 0.78-0.89x: the power was computed as the sum of
`view_as_real(X) ** 2` over its last dimension of two, a reduction 10x slower on this CPU than
one fused `addcmul(re^2, im, im)`; with it the loader is faster than the bare steps (which
take a square root in `abs` and square it again). On a GPU: not measured (no device lent).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from bench.run import Result, interleaved, timed
from shoal.catalog import Catalog
from shoal.datasets import speech_commands
from shoal.datasets.speech_commands_sample import write_bench_clips, write_tar_gz
from shoal.features.audio import AudioFeatureConfig, SpeechFeatures, build
from shoal.models.audio_cnn import AudioCNN, AudioCNNConfig, speech_loss
from shoal.models.batches import pick_device
from shoal.models.train import TrainConfig, seeded, train

CLIPS, BATCH, BATCHES, BATCH_SIZE = 3000, 256, 6, 32
CACHE = Path(__file__).parent / ".out" / "speech"


def bench_data() -> tuple[Path, Path]:
    """The 3,000-clip folder and its archive, written once and reused."""
    folder, archive = CACHE / "clips", CACHE / "speech_commands_bench.tar.gz"
    if len(list(folder.glob("*/*.wav"))) != CLIPS or not archive.exists():
        write_bench_clips(folder, clips=CLIPS)
        write_tar_gz(folder, archive)
    return folder, archive


def _wavs(source: Path) -> Iterator[tuple[str, bytes]]:
    """(name in the dataset, bytes) of every clip of a folder, or of a .tar.gz read as one stream."""
    import tarfile

    if source.is_dir():
        for path in sorted(source.glob("*/*.wav")):
            yield path.relative_to(source).as_posix(), path.read_bytes()
        return
    with tarfile.open(source, "r|gz") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".wav"):
                yield member.name.removeprefix("./"), archive.extractfile(member).read()


def plain_loop(source: Path, out: Path) -> None:
    """Read, hash, decode and write the same Parquet as the ingest, one step after the other."""
    import hashlib
    from itertools import count, islice

    import pyarrow as pa
    import pyarrow.parquet as pq

    from shoal.datasets.speech_commands import BATCH as CLIPS_PER_FILE
    from shoal.datasets.speech_commands import _clip_batch, decode
    from shoal.datasets.speech_members import Member

    out.mkdir(parents=True, exist_ok=True)
    stream = _wavs(source)
    for number in count():
        if not (clips := list(islice(stream, CLIPS_PER_FILE))):
            return
        hashes = [hashlib.sha256(data).hexdigest() for _, data in clips]
        decoded = [(Member(name, name, data), decode(data)) for name, data in clips]
        pq.write_table(pa.Table.from_batches([_clip_batch(decoded, ["train"] * len(decoded), hashes)]),
                       out / f"part-{number:04d}.parquet")


def _ingest(scratch: Path, source: Path, runs: list) -> None:
    home = scratch / f"home-{source.name}-{len(runs)}"
    runs.append(speech_commands.ingest(Catalog(home), [source]))


def ingest_results(folder: Path, archive: Path, scratch: Path) -> list[Result]:
    results = []
    for label, source in (("folder", folder), ("tar.gz", archive)):
        runs: list = []
        comparison = interleaved(timed(lambda source=source, runs=runs: _ingest(scratch, source, runs)),
                                 timed(lambda source=source: plain_loop(source, scratch / f"plain-{label}")),
                                 repeats=3)
        assert all(len(r.committed) == CLIPS for r in runs), runs[0].failures[:3]
        results.append(Result(
            name=f"Speech ingest, {CLIPS} WAVs ({label})", ours_label=f"shoal ingest speech ({label}, one commit)",
            ours_seconds=comparison.ours.median, ours_spread=comparison.ours.spread,
            baseline_label="plain loop: read, hash, decode, write the same Parquet",
            baseline_seconds=comparison.baseline.median,
            baseline_spread=comparison.baseline.spread, target=">= 1.2x", passed=comparison.ratio >= 1.2,
            notes=f"speed-up {comparison.summary}; {CLIPS / comparison.ours.median:.0f} clips/s vs "
                  f"{CLIPS / comparison.baseline.median:.0f} clips/s"))
    return results


def spectrogram_result(features: SpeechFeatures, device: torch.device) -> Result:
    clips = features.clips("train")
    staged = clips.to(device)
    order = torch.arange(len(clips), device=device)
    batches = [order[i : i + BATCH] for i in range(0, len(clips), BATCH)]
    spec = features.config.spectrogram
    window = torch.hann_window(spec.win_length, device=device)
    window = window / window.pow(2).sum().sqrt()  # torchaudio's "window" normalization
    waveforms = features.waveforms[torch.from_numpy(clips.rows)].to(device)
    mean, std = features.mean.to(device)[:, None], features.std.to(device)[:, None]
    samples = [waveforms[rows] for rows in batches]

    def ours() -> None:
        for rows in batches:
            staged.gather(rows)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def bare() -> None:
        for x in samples:
            power = torch.stft(x.float() / 32768.0, n_fft=spec.n_fft, hop_length=spec.hop_length,
                               win_length=spec.win_length, window=window, return_complex=True).abs() ** 2
            (torch.log(power + spec.log_offset) - mean) / std
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    ours(), bare()  # warm-up
    comparison = interleaved(timed(ours), timed(bare), repeats=5)
    return Result(
        name=f"Spectrograms, {len(clips)} clips in batches of {BATCH}, {device}",
        ours_label="SpeechClips.gather (stft, power, log, normalize)", ours_seconds=comparison.ours.median,
        ours_spread=comparison.ours.spread, baseline_label="bare torch: the same stft, power, log, normalization",
        baseline_seconds=comparison.baseline.median, baseline_spread=comparison.baseline.spread, target=">= 0.9x",
        passed=comparison.ratio >= 0.9,
        notes=f"speed-up {comparison.summary}; {len(clips) / comparison.ours.median:.0f} clips/s vs "
              f"{len(clips) / comparison.baseline.median:.0f} clips/s")


def bare_training(features: SpeechFeatures, config: AudioCNNConfig, device: torch.device) -> float:
    """Seconds of a bare loop over the same number of batches of the same clips."""
    model = seeded(0, lambda: AudioCNN(config)).to(device).train()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)
    staged = features.clips("train").to(device)
    order = torch.randperm(len(staged), generator=torch.Generator().manual_seed(0)).to(device)
    started = time.perf_counter()
    for i in range(BATCHES):
        batch = staged.gather(order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE])
        optimizer.zero_grad()
        speech_loss(model(batch["x"]), batch).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def training_result(features: SpeechFeatures, device: torch.device, checkpoints: Path) -> Result:
    config = AudioCNNConfig()
    valid = torch.utils.data.Subset(features.clips("valid"), range(BATCH_SIZE))

    def generic() -> float:
        return train(seeded(0, lambda: AudioCNN(config)), loss_fn=speech_loss, train_data=features.clips("train"),
                     val_data=valid, config=TrainConfig(epochs=1, batch_size=BATCH_SIZE, lr=1.0, optimizer="adadelta",
                                                        max_batches_per_epoch=BATCHES),
                     checkpoint_dir=checkpoints, resume=False).seconds

    bare_training(features, config, device)  # warm-up
    comparison = interleaved(generic, lambda: bare_training(features, config, device), repeats=3)
    done = BATCHES * BATCH_SIZE
    return Result(
        name=f"CNN training, (257, 101) spectrograms, batch {BATCH_SIZE}, {device}",
        ours_label="shoal train() (checkpoints, validation)", ours_seconds=comparison.ours.median,
        ours_spread=comparison.ours.spread, baseline_label="bare PyTorch loop", baseline_seconds=comparison.baseline.median,
        baseline_spread=comparison.baseline.spread, target="report (>= 0.9x)", passed=comparison.ratio >= 0.9,
        notes=f"speed-up {comparison.summary}; medians: ours {done / comparison.ours.median:.1f} clips/s, bare "
              f"{done / comparison.baseline.median:.1f} clips/s over {done} clips; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")


def run() -> list[Result]:
    """Ingest against the soundfile loop, spectrograms against bare stft, training against a bare loop."""
    folder, archive = bench_data()
    device = pick_device()
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        results = ingest_results(folder, archive, Path(scratch))
        catalog = Catalog(Path(scratch, f"home-{folder.name}-0"))
        build(catalog, config=AudioFeatureConfig())
        features = SpeechFeatures(catalog)
        results.append(spectrogram_result(features, device))
        results.append(training_result(features, device, Path(scratch, "checkpoints")))
    return results
