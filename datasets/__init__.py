"""One module per source; importing this package registers them all (see shoal.sources)."""

from shoal.datasets import oni

__all__ = ["oni"]
