"""`shoal catalog site OUT [--serve]`: the catalog as a static HTML site, opened from disk or served on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoal.cli.catalog import catalog_app
from shoal.cli.root import _catalog


@catalog_app.command("site")
def catalog_site(
    out: Annotated[Path | None, typer.Argument(metavar="OUT", help="The site's folder (created); optional with --serve, which "
                                                    "then writes it to a temporary folder.")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the site read-only on 127.0.0.1 until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(min=0, max=65535, help="With --serve: the port (0: a free one, printed).")] = 0,
    no_drift: Annotated[bool, typer.Option("--no-drift", help="Leave out the drift reports (they read each task's "
                                                                "new data and training data).")] = False,
) -> None:
    """Write the catalog as a static HTML site: datasets, versions, statistics, lineage graphs, models, plots."""
    import tempfile

    from shoal.site import build_site, site_server

    if out is None and not serve:
        raise typer.BadParameter("pass the site's folder, e.g. `shoal catalog site site/`, or --serve",
                                 param_hint="OUT")
    with tempfile.TemporaryDirectory(prefix="shoal-site-") as scratch:
        report = build_site(_catalog(), Path(scratch) if out is None else out, with_drift=not no_drift)
        typer.echo(f"wrote {report.pages} pages ({report.datasets} datasets, {report.models} models, "
                   f"{report.images} plots): {report.index.resolve().as_uri()}")
        if not serve:
            return
        server = site_server(report.out, port=port)
        host, bound = server.server_address[:2]
        typer.echo(f"serving {report.out} read-only on http://{host}:{bound}/ (Ctrl-C stops it)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            typer.echo("stopped")
        finally:
            server.server_close()
