"""Dask clusters for ingest, backfills and features: the `--cluster` forms and a client.

The flows' task runner on a cluster is `shoal.flows.ingest.on_cluster` (only flows/ imports Prefect).

`local` or `local:N` starts a `distributed.LocalCluster` of N worker processes (default one
per core) for the length of a command; `tcp://HOST:PORT` connects to a running scheduler
(`dask scheduler` + `dask worker tcp://HOST:PORT`). Workers write straight into the
catalog's storage, so a remote cluster needs a home its workers reach as well (an
object-store URL, or a file system mounted at the same path).

What spreads is the decoding (and the writing of data chunks or files) of source files, and
the reading and coarsening of the SST for the ENSO features; the commit stays single, on
the driver. `distributed` costs ~0.4 s to import: it is imported inside
the functions, so that `import shoal` stays fast.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from shoal.errors import ShoalError

if TYPE_CHECKING:
    from distributed import Client
    from icechunk import ForkSession

T = TypeVar("T")
FORMS = "local, local:N (N worker processes, N >= 1) or tcp://HOST:PORT (a running scheduler, e.g. tcp://10.0.0.5:8786)"
_LOCAL = re.compile(r"local(?::(\d+))?")
_ADDRESS = re.compile(r"tcp://[^\s:/]+:\d{1,5}")
CONNECT_TIMEOUT = "10s"  # a wrong address fails in seconds, not distributed's default 30 s


class ClusterError(ShoalError):
    """A `--cluster` value that names no cluster, or a scheduler that cannot be reached."""


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed `--cluster` value: a LocalCluster of `workers` processes, or the scheduler at `address`."""

    workers: int | None = None
    address: str | None = None


def parse(value: str) -> ClusterSpec:
    """Parse a `--cluster` value.

    Raises:
        ClusterError: neither local, local:N nor tcp://HOST:PORT.
    """
    local = _LOCAL.fullmatch(value)
    if local and (local.group(1) is None or int(local.group(1)) >= 1):
        return ClusterSpec(workers=int(local.group(1)) if local.group(1) else os.cpu_count() or 1)
    if _ADDRESS.fullmatch(value):
        return ClusterSpec(address=value)
    raise ClusterError(f"--cluster {value!r}: expected {FORMS}")


@contextmanager
def connect(spec: ClusterSpec | None) -> Iterator[Client | None]:
    """A `distributed.Client` on the cluster `spec` names (None: no cluster, None yielded); closed on exit.

    A LocalCluster has one thread per worker process: decoding GRIB holds the GIL (two
    decoding threads in one process were slower than one), so processes are what scale.

    Raises:
        ClusterError: the scheduler at `spec.address` does not answer.
    """
    if spec is None:
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    if spec.workers is not None:
        # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, against fragmentation in
        # long-lived workers; it also pins glibc's mmap threshold, so every ~2 MB field a
        # decode allocates is mapped and faulted in afresh: decoding 780 COBE months in a
        # process took 1.6 s with it, 1.0 s without. A cluster that lives for one command
        # goes without it.
        environ = {key: value for key, value in dask.config.get("distributed.nanny.pre-spawn-environ").items()
                   if key != "MALLOC_TRIM_THRESHOLD_"}
        # The scheduler serves HTTP (health, and the dashboard when bokeh is installed) whatever
        # the setting; ":0" takes a free port rather than 8787, which another cluster may hold.
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
                LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True, dashboard_address=":0") as local, \
                Client(local) as client:
            yield client
        return
    try:
        client = Client(spec.address, timeout=CONNECT_TIMEOUT)
    except OSError as error:
        raise ClusterError(f"cannot reach the Dask scheduler at {spec.address} ({error}); start one (`dask scheduler`) "
                           "or check the address") from error
    with client:
        yield client


def workers(client: Client) -> int:
    """How many tasks the client's cluster runs at once now (its worker threads; at least 1, to size work by)."""
    return max(1, sum(client.nthreads().values()))


def on(client: Client | None, function: Callable[..., T], *, spreads: bool) -> Callable[..., T]:
    """`function` with `client=client` when there is a client and it `spreads` (a declared capability:
    `Source.spreads`, `Task.spreads`); else `function`, in this process."""
    if client is not None and spreads:
        return partial(function, client=client)
    return function


# Icechunk forks: workers write array chunks into forks of the driver's ONE session
# (`ArraySession.fork`), which merges them (`ArraySession.merge`) and commits once.


def copy_fork(base: ForkSession) -> ForkSession:
    """An independent copy of a fork and its changes, made through bytes as icechunk's own `fork` does.

    Each worker task writes into its own copy: one fork shared by two tasks of one process
    (threads) would hold both tasks' writes.
    """
    return pickle.loads(pickle.dumps(base))  # noqa: S301 (our own object, never outside bytes)
