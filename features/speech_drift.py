"""Drift of the speech features: clips ingested after a feature version's input against its training clips (`shoal drift speech`).

The reference is the `speech` version the feature version names in its lineage, restricted to
its training clips by the feature version's split; the new data is every clip of the newest
`speech` version that the reference version does not hold (an ingest appends clips). Each clip
becomes its mean log power (the feature version's spectrogram, before normalization) in each of
BANDS equal frequency bands; each band is one variable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shoal.drift import DriftReport, Thresholds, compare, feature_lineage, ordered, register_drift
from shoal.errors import CatalogError
from shoal.features.audio import DATASET, INPUT, AudioFeatureConfig, SpectrogramConfig, read_speech, spectrogram, \
    split_codes

if TYPE_CHECKING:
    from shoal.catalog import Catalog

BANDS = 8  # equal frequency bands: 1 kHz each at 16 kHz
BATCH = 256  # clips per spectrogram batch


def band_power(waveforms: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """(N, BANDS) the mean log power of each clip in each band, over its frames and the band's bins."""
    import torch

    bins = np.array_split(np.arange(config.shape[0]), BANDS)
    out = np.empty((len(waveforms), BANDS), dtype=np.float64)
    for start in range(0, len(waveforms), BATCH):
        spectra = spectrogram(torch.from_numpy(waveforms[start:start + BATCH]), config).numpy()  # (B, F, T)
        out[start:start + BATCH] = np.stack([spectra[:, chosen].mean(axis=(1, 2)) for chosen in bins], axis=1)
    return out


def band_names(config: SpectrogramConfig, *, sample_rate: int = 16_000) -> list[str]:
    """'log power 0-1000 Hz', ... for each band."""
    hz = np.fft.rfftfreq(config.n_fft, 1.0 / sample_rate)
    return [f"log power {hz[chosen[0]]:.0f}-{hz[chosen[-1]]:.0f} Hz"
            for chosen in np.array_split(np.arange(config.shape[0]), BANDS)]


@register_drift("speech")
def speech_drift(catalog: Catalog, *, version: int | str | None = None, since: str | None = None,
                 thresholds: Thresholds = Thresholds()) -> DriftReport:
    """The clips ingested after a speech feature version's input against its training clips, per frequency band.

    Args:
        version: the `speech_features` version (default: the newest).
        since: not taken: clips have no time; the new clips are those the reference version lacks.

    Raises:
        CatalogError: no feature version, or no clip ingested after the features' input.
    """
    if since is not None:
        raise CatalogError("--since: clips have no time; drift compares the clips ingested after the features' "
                           "`speech` version with its training clips (pick the features with --version)")
    lineage = feature_lineage(catalog, DATASET, version, "speech")
    config = AudioFeatureConfig.from_dict(lineage.parameters["config"])
    (speech_input,) = [item for item in lineage.inputs if item.name == INPUT]
    newest = catalog.latest_version(INPUT)
    reference = read_speech(catalog, int(speech_input.version), config.spectrogram.n_samples)
    latest = read_speech(catalog, newest, config.spectrogram.n_samples)
    fresh = ~np.isin(latest.clip_id, reference.clip_id)
    if not fresh.any():
        raise CatalogError(f"no clip ingested after speech version {speech_input.version}, the input of these "
                           "features; ingest the new clips (`shoal ingest speech FOLDER`)")
    train = split_codes(config, reference) == 0
    before = band_power(reference.waveforms[train], config.spectrogram)
    after = band_power(latest.waveforms[fresh], config.spectrogram)
    findings = [compare(name, "all", before[:, i], after[:, i], thresholds)
                for i, name in enumerate(band_names(config.spectrogram))]
    from shoal.arrays import resolve

    number = resolve(catalog.uri("array", DATASET), DATASET, version).version
    return DriftReport(task="speech", features=f"{DATASET} version {number}",
                       reference=f"{int(train.sum())} training clips of speech version {speech_input.version}",
                       new=f"{int(fresh.sum())} clips of speech version {newest} not in version {speech_input.version}",
                       thresholds=thresholds, findings=ordered(findings))
