"""One module per source; importing this package registers them all (see shoal.sources)."""

from shoal.datasets import cobe_sst, higgs, oni, speech_commands

__all__ = ["cobe_sst", "higgs", "oni", "speech_commands"]
