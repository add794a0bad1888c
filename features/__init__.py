"""One module per feature set: fit statistics on the training split, transform, materialize."""

from shoal.features import enso

__all__ = ["enso"]
