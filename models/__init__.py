"""One module per architecture, one generic train / evaluate / predict loop, the tasks, the registry.

The task modules (`enso`) are imported here, which registers them (`shoal.contract`); they
import torch only inside their functions. The torch modules (`convlstm`, `train`, `runs`,
`reports`) are imported on first use (`shoal.models.convlstm` or `from shoal.models import
train`), so that `import shoal.models` and the registry stay free of torch's ~1-2 s import.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from shoal.models import registry

__all__ = ["audio_cnn", "convlstm", "registry", "reports", "runs", "tabnet", "train"]
_LAZY_MODULES = frozenset({"audio_cnn", "convlstm", "reports", "runs", "tabnet", "train"})


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
