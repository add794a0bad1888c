"""One module per feature set: fit statistics on the training split, transform, materialize."""

from shoal.features import audio, enso, higgs

__all__ = ["audio", "enso", "higgs"]
