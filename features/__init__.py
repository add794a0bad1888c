"""One module per feature set: fit statistics on the training split, transform, materialize."""

from shoal.features import audio, enso, enso_drift, higgs, higgs_drift, speech_drift

__all__ = ["audio", "enso", "enso_drift", "higgs", "higgs_drift", "speech_drift"]
