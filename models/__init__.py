"""One module per architecture, one generic train / evaluate / predict loop, the model registry.

`registry` is imported here; the torch modules (`convlstm`, `train`, `enso`) are imported on
first use (`shoal.models.convlstm` or `from shoal.models import train`), so that
`import shoal.models` and the registry stay free of torch's ~1-2 s import.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from shoal.models import registry

__all__ = ["convlstm", "enso", "registry", "train"]
_TORCH_MODULES = frozenset({"convlstm", "enso", "train"})


def __getattr__(name: str) -> ModuleType:
    if name in _TORCH_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
