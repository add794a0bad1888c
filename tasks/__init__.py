"""One module per task (enso, higgs, speech): settings, the features it needs, the model it
builds, loss, baselines, metrics, predictions schema.

Importing this package registers them (`shoal.contract.register_task`); they import torch
only inside their functions, so the registry stays cheap to import.
"""

from __future__ import annotations

from shoal.tasks import enso, higgs, speech

__all__ = ["enso", "higgs", "speech"]
