"""One module per architecture, one generic train loop, the model registry.

torch is imported by `convlstm`, `train` and `enso` only: import those where they are used.
"""

from shoal.models import registry

__all__ = ["registry"]
