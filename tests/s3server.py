"""A real S3-compatible server for tests and benchmarks: moto's server mode, in its own process, on 127.0.0.1.

Its own process, not moto's ThreadedMotoServer: deltalake holds the GIL while it waits on
the network, so a server thread inside the same process would never answer it.

Each request is answered whole under one lock (`serve`): moto checks a conditional put
(`If-None-Match: *`, how Delta commits the next log entry) and then stores the object, in
two steps, on a threaded server — two concurrent commits of the same version could both
succeed and one be lost, which real S3 never allows. Serialized, moto is atomic as S3 is.
(The writer the concurrency test lost on clean clones was shoal's own: a retried create re-read a
consumed stream; `shoal.tables.write_table` now holds a table's first write.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.timeouts import scaled


@contextmanager
def moto_s3(bucket: str) -> Iterator[dict[str, str]]:
    """A moto S3 server on a free loopback port with one bucket; the AWS variables that point at it, set meanwhile.

    Raises:
        RuntimeError: the server did not answer within a minute.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tests.s3server", str(port)], cwd=Path(__file__).parents[1],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + scaled(60)
        while True:
            try:
                httpx.put(f"{env['AWS_ENDPOINT_URL']}/{bucket}", timeout=scaled(5)).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on 127.0.0.1:{port} (exit {server.poll()})")
                time.sleep(0.2)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(timeout=scaled(30))


def serve(port: int) -> None:
    """moto's S3 on 127.0.0.1:`port`, every request answered whole under one lock (see the module docstring)."""
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    app, lock = DomainDispatcherApplication(create_backend_app), threading.Lock()

    def atomic(environ: dict, start_response: object) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    run_simple("127.0.0.1", port, atomic, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
