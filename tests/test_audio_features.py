"""Speech features: the spectrogram definition, training-only statistics, splits, content addressing, staging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from shoal.catalog import Catalog
from shoal.datasets.speech_commands import SCHEMA, WORDS
from shoal.errors import CatalogError
from shoal.features.audio import (
    AudioFeatureConfig,
    SpectrogramConfig,
    SpeechFeatures,
    build,
    random_split,
    spectrogram,
)
from shoal.lineage import Provenance

FIXTURES = Path(__file__).parent / "data" / "speech_commands" / "v0.01"  # 9 real clips: 3 train, 3 valid, 3 test
SAMPLE = Path(__file__).parents[1] / "datasets" / "sample_data" / "speech_commands"  # 300 real clips, 30 words


def speech_table(root: Path, *, change: dict[str, np.ndarray] | None = None) -> pa.Table:
    """The `speech` rows of the WAVs under `root` (splits from its list files), some waveforms replaced by `change`."""
    import soundfile as sf

    lists = {split: set((root / name).read_text().split()) if (root / name).exists() else set()
             for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt"))}
    rows = []
    for path in sorted(root.glob("*/*.wav")):
        clip_id = path.relative_to(root).as_posix()
        samples, rate = sf.read(path, dtype="int16")
        samples = (change or {}).get(clip_id, samples)
        speaker, _, utterance = path.stem.partition("_nohash_")
        rows.append({
            "clip_id": clip_id, "label": path.parent.name, "label_index": WORDS.index(path.parent.name),
            "speaker_id": speaker, "utterance": int(utterance),
            "split": "valid" if clip_id in lists["valid"] else "test" if clip_id in lists["test"] else "train",
            "sample_rate": rate, "source_sample_rate": rate, "source_channels": 1, "n_samples": len(samples),
            "sha256": "0" * 64, "waveform": samples.tolist(),
        })
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_speech(catalog: Catalog, table: pa.Table) -> int:
    return catalog.write_table("speech", table, mode="append", provenance=Provenance(message="test clips"))


@pytest.fixture
def speech(tmp_path: Path) -> Catalog:
    """A catalog whose `speech` table holds the 9 fixture clips."""
    catalog = Catalog(tmp_path / "home")
    write_speech(catalog, speech_table(FIXTURES))
    return catalog


def _waveform(clip_id: str, root: Path = FIXTURES) -> np.ndarray:
    import soundfile as sf

    return sf.read(root / clip_id, dtype="int16")[0]


def _numpy_log_spectrogram(samples: np.ndarray, n_fft: int = 512, win: int = 480, hop: int = 160) -> np.ndarray:
    """The same definition in float64 numpy: reflect pad, centred periodic Hann frames, rfft, window norm."""
    x = np.zeros(16000)
    x[: min(len(samples), 16000)] = samples[:16000] / 32768.0
    padded = np.pad(x, n_fft // 2, mode="reflect")
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = hann
    frames = np.stack([padded[t * hop : t * hop + n_fft] for t in range(len(x) // hop + 1)])  # (T, n_fft)
    spectrum = np.fft.rfft(frames * window, axis=1) / np.sqrt((hann**2).sum())  # (T, F)
    return np.log(np.abs(spectrum) ** 2 + 0.01).T  # (F, T)


def test_spectrograms_are_257_by_101_short_clips_padded_with_zeros_and_long_ones_cropped() -> None:
    samples = torch.from_numpy(_waveform("yes/439c84f4_nohash_1.wav"))
    assert spectrogram(samples[None]).shape == (1, 257, 101) and SpectrogramConfig().shape == (257, 101)
    assert spectrogram(samples[None]).dtype == torch.float32
    short = samples[:12320]  # 0.77 s
    padded = torch.cat([short, torch.zeros(16000 - 12320, dtype=torch.int16)])
    assert torch.equal(spectrogram(short[None]), spectrogram(padded[None]))
    long = torch.cat([samples, samples[:4800]])  # 1.3 s
    assert torch.equal(spectrogram(long[None]), spectrogram(samples[None]))
    assert torch.equal(spectrogram(samples[None].float() / 32768), spectrogram(samples[None]))  # floats are taken as is


def test_spectrogram_matches_an_independent_numpy_computation_of_the_definition() -> None:
    for clip_id in ("no/6a27a9bf_nohash_0.wav", "up/f428ca69_nohash_1.wav"):
        samples = _waveform(clip_id)
        ours = spectrogram(torch.from_numpy(samples)[None])[0].double().numpy()
        np.testing.assert_allclose(ours, _numpy_log_spectrogram(samples), atol=1e-4, rtol=1e-5)
    short = _waveform("bed/62581901_nohash_0.wav", SAMPLE)[:12320]
    np.testing.assert_allclose(spectrogram(torch.from_numpy(short)[None])[0].double().numpy(),
                               _numpy_log_spectrogram(short), atol=1e-4, rtol=1e-5)


def test_a_spectrogram_does_not_depend_on_the_batch_it_was_computed_in() -> None:
    batch = torch.from_numpy(np.stack([_waveform(p.relative_to(FIXTURES).as_posix()) for p in sorted(FIXTURES.glob("*/*.wav"))]))
    together = spectrogram(batch)
    assert all(torch.equal(spectrogram(batch[i : i + 1])[0], together[i]) for i in range(len(batch)))
    assert torch.equal(spectrogram(batch[[4, 0, 7]]), together[[4, 0, 7]])


def test_statistics_equal_a_float64_two_pass_numpy_computation_over_training_clips_and_frames(speech: Catalog) -> None:
    build(speech, config=AudioFeatureConfig(), device="cpu")
    features = SpeechFeatures(speech)
    train = np.nonzero(features.split == 0)[0]
    assert len(train) == 3
    values = spectrogram(features.waveforms[train]).double().numpy()  # (3, 257, 101)
    mean = values.mean(axis=(0, 2))
    var = ((values - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    np.testing.assert_allclose(features.stats.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(features.stats.var, var, rtol=1e-12)
    assert (features.stats.count == 3 * 101).all() and features.stats.shape == (257,)
    stored = speech.open_array("speech_features")
    np.testing.assert_array_equal(stored["mean"].values, features.stats.mean)


def test_validation_and_test_clips_never_change_the_statistics(speech: Catalog, tmp_path: Path) -> None:
    build(speech, config=AudioFeatureConfig(), device="cpu")
    reference = speech.lineage("speech_features").parameters["statistics"]
    valid, test, train = "no/6a27a9bf_nohash_0.wav", "no/97f4c236_nohash_2.wav", "no/988e2f9a_nohash_0.wav"
    loud = {clip: np.clip(_waveform(clip).astype(np.int32) * 4, -32768, 32767).astype(np.int16) for clip in (valid, test)}
    changed = Catalog(tmp_path / "changed")
    write_speech(changed, speech_table(FIXTURES, change=loud))
    build(changed, config=AudioFeatureConfig(), device="cpu")
    assert changed.lineage("speech_features").parameters["statistics"] == reference
    trained = Catalog(tmp_path / "trained")
    write_speech(trained, speech_table(FIXTURES, change={train: _waveform(train)[::-1].copy()}))
    build(trained, config=AudioFeatureConfig(), device="cpu")
    assert trained.lineage("speech_features").parameters["statistics"] != reference


def test_the_build_is_content_addressed_and_a_new_speech_version_makes_a_new_feature_version(speech: Catalog) -> None:
    config = AudioFeatureConfig()
    first = build(speech, config=config, device="cpu")
    assert not first.reused and first.version == 0
    again = build(speech, config=config, device="cpu")
    assert again.reused and (again.version, again.snapshot) == (first.version, first.snapshot)
    other = build(speech, config=AudioFeatureConfig(split="random"), device="cpu")
    assert not other.reused and other.version == 1
    extra = speech_table(SAMPLE).filter(pa.compute.equal(pa.compute.field("clip_id"), "bed/62581901_nohash_0.wav"))
    assert write_speech(speech, extra) == 1
    newer = build(speech, config=config, device="cpu")
    assert not newer.reused and newer.version == 2
    assert speech.lineage("speech_features").parameters["speech_version"] == 1
    assert len(SpeechFeatures(speech).clip_id) == 10 and len(SpeechFeatures(speech, version=0).clip_id) == 9


def test_materialized_and_on_the_fly_clips_give_identical_numbers(speech: Catalog) -> None:
    lazy = build(speech, config=AudioFeatureConfig(), device="cpu")
    stored = build(speech, config=AudioFeatureConfig(materialize=True), device="cpu")
    a, b = SpeechFeatures(speech, version=lazy.version), SpeechFeatures(speech, version=stored.snapshot)
    assert a.spectrograms is None and b.spectrograms is not None and b.spectrograms.shape == (9, 257, 101)
    assert a.stats == b.stats
    for split in ("train", "valid", "test"):
        on_the_fly, materialized = a.clips(split), b.clips(split)
        assert len(on_the_fly) == len(materialized) == 3
        for i in range(3):
            assert torch.equal(on_the_fly[i]["x"], materialized[i]["x"])
        items = torch.tensor([2, 0, 1])
        x = on_the_fly.to(torch.device("cpu")).gather(items)["x"]
        assert torch.equal(x, materialized.to(torch.device("cpu")).gather(items)["x"])
    chunks = speech.open_array("speech_features", version=stored.snapshot).spectrogram.encoding["chunks"]
    assert chunks == (9, 257, 101)  # 64 clips a chunk, fewer here


def test_the_staging_gather_equals_the_default_collation_of_items(speech: Catalog) -> None:
    from torch.utils.data import default_collate

    for materialize in (False, True):
        build(speech, config=AudioFeatureConfig(materialize=materialize), device="cpu")
        clips = SpeechFeatures(speech).clips("valid")
        item = clips[1]
        assert item["x"].shape == (1, 257, 101) and item["x"].dtype == torch.float32
        assert item["label"].shape == () and item["label"].dtype == torch.int64
        items = torch.tensor([2, 0, 1, 2])
        expected = default_collate([clips[int(i)] for i in items])
        gathered = clips.to(torch.device("cpu")).gather(items)
        assert gathered.keys() == expected.keys() == {"x", "label"}
        for key in expected:
            assert gathered[key].dtype == expected[key].dtype and torch.equal(gathered[key], expected[key]), key


def test_labels_and_official_splits_come_from_the_table_in_clip_id_order(speech: Catalog) -> None:
    build(speech, config=AudioFeatureConfig(), device="cpu")
    features = SpeechFeatures(speech)
    table = speech_table(FIXTURES).sort_by("clip_id")
    assert features.clip_id.tolist() == table.column("clip_id").to_pylist()
    assert features.label.tolist() == table.column("label_index").to_pylist()
    assert [("train", "valid", "test")[c] for c in features.split] == table.column("split").to_pylist()
    valid = features.clips("valid")
    assert features.clip_id[valid.rows].tolist() == ["no/6a27a9bf_nohash_0.wav", "up/439c84f4_nohash_1.wav",
                                                     "yes/439c84f4_nohash_1.wav"]
    assert int(valid[2]["label"]) == WORDS.index("yes")


def test_the_random_split_is_70_15_15_and_deterministic_by_seed(tmp_path: Path) -> None:
    codes = random_split(300, 0)
    assert np.bincount(codes).tolist() == [210, 45, 45] and codes.dtype == np.int8
    assert np.array_equal(random_split(300, 0), codes) and not np.array_equal(random_split(300, 1), codes)
    assert np.bincount(random_split(9, 0)).tolist() == [6, 1, 2]
    catalog = Catalog(tmp_path / "sample")
    write_speech(catalog, speech_table(SAMPLE))
    build(catalog, config=AudioFeatureConfig(split="random", split_seed=3), device="cpu")
    features = SpeechFeatures(catalog)
    assert np.array_equal(features.split, random_split(300, 3))
    assert len(features.clips("train")) == 210 and len(features.clips("test")) == 45
    assert features.clip_id.tolist() == sorted(features.clip_id.tolist())
    assert features.stats.count[0] == 210 * 101
    train = features.clips("train")
    x = train.to(torch.device("cpu")).gather(torch.arange(len(train)))["x"].double()  # (210, 1, 257, 101) normalized
    np.testing.assert_allclose(x.mean(dim=(0, 1, 3)).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(dim=(0, 1, 3), correction=0).numpy(), 1.0, rtol=1e-4)


def test_the_same_inputs_give_the_same_feature_bytes(speech: Catalog, tmp_path: Path) -> None:
    config = AudioFeatureConfig(materialize=True)
    build(speech, config=config, device="cpu")
    again = Catalog(tmp_path / "again")
    write_speech(again, speech_table(FIXTURES))
    build(again, config=config, device="cpu")
    a, b = speech.open_array("speech_features").load(), again.open_array("speech_features").load()
    for name in ("spectrogram", "mean", "std", "label_index", "split"):
        assert a[name].values.tobytes() == b[name].values.tobytes(), name
    assert a.clip_id.values.tolist() == b.clip_id.values.tolist()


def test_a_missing_speech_table_is_refused_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"run `shoal ingest speech PATH` first") as error:
        build(Catalog(tmp_path / "empty"), config=AudioFeatureConfig())
    assert "\n" not in str(error.value)
    with pytest.raises(CatalogError, match=r"run `shoal features speech` first"):
        SpeechFeatures(Catalog(tmp_path / "empty"))


def test_the_generic_train_loop_sees_the_same_batches_staged_or_through_a_dataloader(speech: Catalog, tmp_path: Path) -> None:
    from shoal.models.audio_cnn import AudioCNN, AudioCNNConfig, speech_loss
    from shoal.models.train import TrainConfig, seeded, train

    build(speech, config=AudioFeatureConfig(), device="cpu")
    features = SpeechFeatures(speech)
    config = AudioCNNConfig(channels=(4, 4, 4, 4), hidden=8)
    histories = []
    for stage in (True, False):
        model = seeded(0, lambda: AudioCNN(config))
        result = train(model, loss_fn=speech_loss, train_data=features.clips("train"), val_data=features.clips("valid"),
                       config=TrainConfig(epochs=2, batch_size=2, device="cpu", stage=stage),
                       checkpoint_dir=tmp_path / f"run{stage}")
        histories.append(result.history)
    assert histories[0] == histories[1]
