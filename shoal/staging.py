"""Source files on object storage: `shoal ingest sst s3://bucket/cobe/`.

A source argument that is a URL (s3://, gs://, az://, http(s)://: whatever obstore's
`from_url` knows, with credentials and endpoint from the standard variables, as for a home)
is downloaded, streamed in 1 MiB pieces, into a temporary folder (`$TMPDIR`) for the length
of the command; the sources then read the local copies with their usual code. Lineage and
error lines name the URL, not the copy (`shown` maps staged paths back), and the sha256 is
that of the bytes read, as for a local file. A URL ending in `/` (or naming no object) is a
folder: every object under it, in its sub-folders too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError, SourceError
from shoal.settings import is_url

PIECE = 1 << 20
DOWNLOADS = 8  # objects fetched at once: obstore waits on the network without the GIL
_STAGED: dict[str, str] = {}  # a staged local folder -> the URL of the folder its files came from (the folders'
# names are random and of one length: none is the start of another)


def shown(text: str) -> str:
    """A message with every staged folder in it replaced by its URL."""
    for root, url in _STAGED.items():
        text = text.replace(root, url)
    return text


def shown_in(value: Any) -> Any:
    """`shown` applied to every string in nested dicts, lists and tuples (the JSON-ready parameters of a commit)."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {shown_in(key): shown_in(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(map(shown_in, value))
    return value


@contextmanager
def staged(arguments: Sequence[str | Path]) -> Iterator[list[Path]]:
    """The source arguments as local paths: URLs downloaded into a temporary folder, removed on exit.

    Raises:
        SourceError: a URL that cannot be read (one line: the URL, the storage's answer, the fix).
        ShoalError: what the body raised, its staged paths replaced by their URLs.
    """
    if not any(is_url(str(argument)) for argument in arguments):
        yield [Path(argument) for argument in arguments]
        return
    with tempfile.TemporaryDirectory(prefix="shoal-sources-") as scratch:
        paths, roots = [], []
        try:
            for argument in map(str, arguments):
                if not is_url(argument):
                    paths.append(Path(argument))
                    continue
                root = Path(tempfile.mkdtemp(dir=scratch)).resolve()
                folder, local = _download(argument, root)
                _STAGED[str(root)] = folder
                roots.append(str(root))
                paths.append(local)
            yield paths
        except ShoalError as error:  # raised while the copies exist: named by their URLs
            raise ShoalError(shown(str(error))) from error
        finally:
            for root in roots:
                del _STAGED[root]


def _download(url: str, root: Path) -> tuple[str, Path]:
    """Download the object or folder at `url` under `root`.

    Returns:
        The URL of the folder that `root` stands for, and the local path of what `url` names.
    """
    import obstore
    from obstore.exceptions import BaseError, NotFoundError
    from obstore.store import from_url

    parent, _, name = url.rstrip("/").rpartition("/")
    try:
        if not url.endswith("/") and "/" in parent.partition("://")[2]:
            store = from_url(parent)
            try:
                obstore.head(store, name)
            except NotFoundError:
                pass
            else:
                _fetch(store, [name], root)
                return parent, root / name
        store = from_url(url.rstrip("/"))
        names = [meta["path"] for batch in obstore.list(store) for meta in batch]
        if not names:
            raise SourceError(url, "no objects there", fix="check the bucket and prefix")
        _fetch(store, names, root)
    except BaseError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SourceError(url, f"cannot read it ({reason})", fix="check the URL, the credentials (AWS_ACCESS_KEY_ID, "
                          "... or a profile) and AWS_ENDPOINT_URL") from error
    return url.rstrip("/"), root


def _fetch(store: object, names: list[str], root: Path) -> None:
    """Stream the objects `names` of `store` to the same relative paths under `root`."""
    import obstore

    def fetch(name: str) -> None:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for piece in obstore.get(store, name).stream(min_chunk_size=PIECE):
                out.write(piece)

    with ThreadPoolExecutor(DOWNLOADS) as pool:
        list(pool.map(fetch, names))
