"""The Speech task: the spectrogram CNN over Speech Commands words, beside linear baselines.

Splits are the dataset's (the official lists, which keep each speaker on one side), or
`--split random`: by speaker, seeded, `--valid-fraction` / `--test-fraction` of the speakers
(`shoal.features.audio`). The analysis split CLIPS at random, so that the same speakers sat on
both sides and its numbers were optimistic; shoal does not offer that leak. The best
epoch is chosen on valid; the skill shown is on test, beside two baselines fitted on the
training clips only and scored on the same test clips:

- majority: the most frequent training word, for every clip;
- mean spectrum: a multinomial logistic regression (scikit-learn, L2, C = 1) on each clip's
  normalized log spectrum averaged over time (257 numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from shoal.datasets.speech_commands import SPLITS, WORDS
from shoal.errors import CatalogError
from shoal.features.audio import DATASET as FEATURES
from shoal.features.audio import AudioFeatureConfig, SpeechFeatures, build, split_record
from shoal.lineage import InputVersion, Provenance
from shoal.contract import (FeatureBuild, FeatureSet, Predicted, Prepared, Task, TaskSettings, feature_loader,
                            register_task, replacing)
from shoal.evaluation import Metric, Scoring, accuracy_of, score
from shoal.splits import RandomSplitSettings

if TYPE_CHECKING:
    from shoal.catalog import Catalog
    from shoal.models.registry import ModelVersion
    from shoal.progress import Reporter

PREDICTION_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("split", pa.string()), ("label", pa.string()), ("predicted_label", pa.string()),
    ("probability", pa.float32()), ("top3_labels", pa.list_(pa.string())), ("top3_probabilities", pa.list_(pa.float32())),
    ("model", pa.string()), ("model_version", pa.int64()), ("feature_version", pa.string()), ("run_id", pa.string()),
])
V001_CLASSES = 30  # v0.01's words; a catalog holding v0.02's five more gets len(WORDS) classes
BATCH = 256  # clips per inference batch


class SpeechSettings(TaskSettings, RandomSplitSettings):
    """Options of the Speech task; the defaults are the analysis' (Adadelta, batch 128, 20 epochs)."""

    feature_fields = ("split", "valid_fraction", "test_fraction", "seed", "materialize")
    epochs: int = Field(20, ge=1, description="Training epochs.")
    batch_size: int = Field(128, ge=1, description="Clips per step.")
    lr: float = Field(1.0, gt=0, description="Adadelta's learning rate (Keras' default).")
    optimizer: Literal["adam", "adadelta"] = Field("adadelta", description="adadelta (the analysis') or adam.")
    split: Literal["official", "random"] = Field(
        "official", description="official (the dataset's validation and testing lists) or random (by speaker, "
                                "seeded by --seed: a speaker's clips stay in one split).")
    materialize: bool = Field(False, description="Store the normalized spectrograms in the feature version.")


_features = feature_loader("speech", FEATURES, SpeechFeatures)


def _classes(features: SpeechFeatures) -> int:
    return V001_CLASSES if int(features.label.max()) < V001_CLASSES else len(WORDS)


def _probabilities(model: Any, features: SpeechFeatures, split: str, *, device: str) -> np.ndarray:
    """(N, classes) softmax of the model on the clips of `split`, in clip_id order."""
    import torch

    from shoal.models.inference import predict

    logits = predict(model, features.clips(split), batch_size=BATCH, device=device)
    return torch.softmax(logits, dim=-1).numpy()


def mean_spectra(features: SpeechFeatures, split: str, *, device: str) -> np.ndarray:
    """(N, F): each clip's normalized log spectrum averaged over time, for the linear baseline."""
    import torch

    from shoal.models.batches import pick_device

    clips, chosen = features.clips(split), pick_device(device)
    staged, order = clips.to(chosen), torch.arange(len(clips), device=chosen)
    parts = [staged.gather(order[i : i + BATCH])["x"].mean(dim=-1).squeeze(1).cpu() for i in range(0, len(clips), BATCH)]
    return torch.cat(parts).numpy().astype(np.float64)


def baselines(features: SpeechFeatures, *, device: str) -> dict[str, np.ndarray]:
    """Predicted label indices of each baseline on the test clips, fitted on the training clips."""
    from sklearn.linear_model import LogisticRegression

    train_labels = features.label[features.split == 0].numpy()
    majority = np.bincount(train_labels).argmax()
    test = int((features.split == 2).sum())
    linear = LogisticRegression(C=1.0, max_iter=2000).fit(mean_spectra(features, "train", device=device), train_labels)
    return {"majority": np.full(test, majority), "mean_spectrum_logistic": linear.predict(mean_spectra(features, "test", device=device))}


SCORING = Scoring(title="Speech Commands word accuracy on test ({split} split)",
                  metrics=(Metric("accuracy", "accuracy", accuracy_of("label", "label")),), primary="accuracy",
                  count="clips")


@register_task("speech")
class Speech(Task):
    """Speech: Speech Commands clips -> `speech_features` -> spectrogram CNN -> `speech_predictions`."""

    model_name = "speech_cnn"
    architecture = "audio_cnn"
    predictions = "speech_predictions"
    settings = SpeechSettings
    scoring = SCORING

    def sources(self, paths: Sequence[Path]) -> list[tuple[str, list[Path]]]:
        """Dataset folders or archives -> `speech`."""
        return [("speech", [Path(p) for p in paths])]

    def build_features(self, catalog: Catalog, settings: SpeechSettings, reporter: Reporter) -> FeatureBuild:
        """Build (or reuse) `speech_features` for the latest `speech`."""
        config = AudioFeatureConfig(materialize=settings.materialize, split=settings.split, seed=settings.seed,
                                    valid_fraction=settings.valid_fraction, test_fraction=settings.test_fraction)
        return build(catalog, config=config, reporter=reporter)

    def prepare(self, catalog: Catalog, settings: SpeechSettings, feature_version: int | str | None) -> Prepared:
        """The CNN sized to the spectrograms and the number of words, and the train / valid clips."""
        from shoal.models.audio_cnn import AudioCNN, AudioCNNConfig, speech_loss

        features = _features(catalog, feature_version)
        n_freq, n_frames = features.config.spectrogram.shape
        config = AudioCNNConfig(n_freq=n_freq, n_frames=n_frames, n_classes=_classes(features))
        train, valid = features.clips("train"), features.clips("valid")
        for name, clips in (("training", train), ("validation", valid)):
            if len(clips) == 0:
                raise CatalogError(f"no {name} clip in {FEATURES} version {features.version}: ingest more clips "
                                   "(`shoal ingest speech PATH`)")
        return Prepared(feature=InputVersion(FEATURES, "array", features.snapshot), model_config=asdict(config),
                        build=lambda: AudioCNN(config), loss_fn=speech_loss, train_data=train, valid_data=valid)

    def model(self, model_config: Mapping[str, Any]) -> Any:
        """The CNN of a stored configuration."""
        from shoal.models.audio_cnn import AudioCNN, AudioCNNConfig

        return AudioCNN(AudioCNNConfig.from_dict(model_config))

    def evaluate(self, catalog: Catalog, model: Any, *, feature_version: str, model_config: Mapping[str, Any],
                 device: str) -> dict[str, Any]:
        """Accuracy, per-word accuracy and the confusion matrix on the test clips; the baselines' accuracy."""
        features = _features(catalog, feature_version)
        truth = features.label[features.split == 2].numpy()
        if len(truth) == 0:
            raise CatalogError(f"no test clip in {FEATURES} version {features.version}: ingest the dataset with its "
                               "testing_list.txt, or build features with --split random")
        predicted = _probabilities(model, features, "test", device=device).argmax(axis=1)
        classes = int(model_config["n_classes"])
        confusion = np.zeros((classes, classes), dtype=np.int64)
        np.add.at(confusion, (truth, predicted), 1)
        present = np.nonzero(confusion.sum(axis=1))[0]
        forecasts = {"model": predicted} | baselines(features, device=device)
        skill = score(SCORING, {"label": truth}, {name: {"label": guess} for name, guess in forecasts.items()})
        return {"period": "test", "split": features.config.split, "skill": skill,
                "per_class_accuracy": {WORDS[i]: float(confusion[i, i] / confusion[i].sum()) for i in present},
                "labels": list(WORDS[:classes]), "confusion": confusion.tolist()}

    def predict(self, catalog: Catalog, model: Any, entry: ModelVersion, *, device: str) -> Predicted:
        """The top-3 words of every clip of every split, and the test confusion matrix as a PNG."""
        from shoal.models.reports import plot_confusion

        features = _features(catalog, entry.feature_version)
        labels = np.array(WORDS[: int(entry.config["model"]["n_classes"])])
        tables = []
        for code, split in enumerate(SPLITS):
            rows = np.nonzero(features.split == code)[0]
            if len(rows) == 0:
                continue
            probabilities = _probabilities(model, features, split, device=device)
            top = np.argsort(-probabilities, axis=1, kind="stable")[:, :3]
            best = np.take_along_axis(probabilities, top, axis=1)
            tables.append(pa.table({
                "clip_id": features.clip_id[rows].tolist(), "split": [split] * len(rows),
                "label": labels[features.label[rows].numpy()].tolist(), "predicted_label": labels[top[:, 0]].tolist(),
                "probability": best[:, 0], "top3_labels": labels[top].tolist(), "top3_probabilities": best.tolist(),
                "model": [self.model_name] * len(rows), "model_version": [entry.version] * len(rows),
                "feature_version": [entry.feature_version] * len(rows), "run_id": [entry.run_id] * len(rows),
            }, schema=PREDICTION_SCHEMA))
        table = pa.concat_tables(tables)
        version = catalog.write_table(self.predictions, table, **replacing(entry), provenance=Provenance(
            inputs=(entry.feature, InputVersion("model_registry", "table", entry.registry_version)),
            parameters={"model": self.model_name, "model_version": entry.version, "run_id": entry.run_id},
            message=f"{self.model_name} v{entry.version}: top-3 words of {table.num_rows} clips",
        ))
        path = Path(catalog.local, "reports", f"{self.model_name}_v{entry.version}_{entry.run_id}_confusion.png")
        plot = plot_confusion(path, np.array(entry.metrics["confusion"]), entry.metrics["labels"],
                              title=f"{self.model_name} v{entry.version}: test confusion ({entry.metrics['split']} split)")
        return Predicted(table=self.predictions, version=version, rows=table.num_rows, plots=(plot,))

    def open_features(self, catalog: Catalog, version: int | str | None) -> FeatureSet:
        """waveform (N, samples) int16, label, clip_id (and spectrogram when materialized); `SpeechClips` datasets.

        The datasets give normalized log-mel spectrograms, computed on the fly from the
        waveforms (or read, when materialized) with the train-only statistics.
        """
        features = _features(catalog, version)

        def arrays(split: str) -> dict[str, np.ndarray]:
            rows = features.split == SPLITS.index(split)
            found = {"waveform": features.waveforms[rows].numpy(), "label": features.label[rows].numpy(),
                     "clip_id": features.clip_id[rows]}
            if features.spectrograms is not None:
                found["spectrogram"] = features.spectrograms[rows].numpy()
            return found

        return FeatureSet(task=self.name, dataset=FEATURES, version=features.version,
                          statistics={"log_mel": features.stats}, split=split_record(features.config, features.split),
                          splits=SPLITS, arrays_of=arrays,
                          dataset_of=features.clips)
