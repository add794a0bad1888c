"""`shoal catalog site`: the static HTML site of a home, its pages, lineage graph, statistics hooks, the
read-only server, and the rendered site in a real headless chromium (skipped where no chromium is installed)."""

from __future__ import annotations

import base64
import fcntl
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xarray as xr

from shoal.catalog import Catalog
from shoal.evaluation import MODEL, score
from shoal.lineage import InputVersion, Provenance
from shoal.models.registry import register_model
from shoal.site import build_site, lineage_graph
from shoal.site_stats import stored_statistics, table_statistics
from shoal.stats import RunningStats
from tests.timeouts import scaled

ONI = Path(__file__).parent / "data" / "nino" / "oni_small.txt"
CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
SCREENSHOTS = Path(__file__).parents[1] / ".test-artifacts" / "site"  # kept after the run, for a person to look at


def _plot(path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(3, 2))
    axes.plot([0, 1, 2], [1, 0, 2])
    axes.set_title(title)
    figure.savefig(path, dpi=60)
    plt.close(figure)


@pytest.fixture
def built(catalog: Catalog, tmp_path: Path) -> Catalog:
    """A home with the pipeline's shape: a real ONI ingest -> an array of features -> a registered model with its
    skill (real intervals) -> a predictions table, a plot of the model and one other plot."""
    from shoal.datasets.oni import ingest
    from shoal.tasks.higgs import SCORING

    ingest(catalog, [ONI])
    months = catalog.read_table("nino34").num_rows
    features = xr.Dataset({"index": (("time",), np.linspace(-1, 1, months, dtype="float32"))},
                          coords={"time": np.arange(months)})
    snapshot = catalog.write_array("index_features", features, provenance=Provenance(
        inputs=(InputVersion("nino34", "table", 0),), message="normalized index"))
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 300)
    skill = score(SCORING, {"label": label}, {MODEL: {"probability": label * 0.3 + rng.random(300) * 0.7},
                                              "majority": {"probability": np.ones(300)}})
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    entry = register_model(catalog, name="higgs_tabnet", architecture="tabnet", config={"width": 8},
                           feature=InputVersion("index_features", "array", snapshot),
                           metrics={"split": "official", "skill": skill, "best_epoch_number": 3}, checkpoint=checkpoint,
                           run_id="run-a")
    catalog.write_table("higgs_predictions", pl.DataFrame({"row_id": [0, 1, 2], "probability": [0.2, 0.9, 0.4]}),
                        provenance=Provenance(inputs=(InputVersion("model_registry", "table", entry.registry_version),
                                                      InputVersion("index_features", "array", snapshot)),
                                              message="higgs_tabnet v0: 3 rows"))
    _plot(Path(catalog.home, "reports", "higgs_tabnet_v0_run-a_masks.png"), "masks")
    _plot(Path(catalog.home, "reports", "enso_skill_by_lead.png"), "skill")
    return catalog


def test_the_site_lists_every_dataset_and_model_copies_the_plots_and_drops_pages_of_datasets_gone(built: Catalog, tmp_path: Path) -> None:
    report = build_site(built, tmp_path / "site", with_drift=False)
    index = report.index.read_text()
    for name in ("nino34", "index_features", "model_registry", "higgs_predictions"):
        assert f'href="dataset-{name}.html">{name}</a>' in index
        assert (tmp_path / "site" / f"dataset-{name}.html").is_file()
    assert 'href="model-higgs_tabnet.html"' in index and (report.datasets, report.models, report.images) == (4, 1, 2)
    assert (tmp_path / "site/reports/higgs_tabnet_v0_run-a_masks.png").read_bytes() == Path(
        built.home, "reports/higgs_tabnet_v0_run-a_masks.png").read_bytes()
    assert 'src="reports/enso_skill_by_lead.png"' in index  # a plot of no model: on the first page
    assert "<script" not in index and "http://" not in index and "https://" not in index  # offline, no CDN
    (tmp_path / "site/dataset-gone.html").write_text("a dataset deleted since the last build")
    (tmp_path / "site/notes.txt").write_text("not the site's")
    build_site(built, tmp_path / "site", with_drift=False)
    assert not (tmp_path / "site/dataset-gone.html").exists() and (tmp_path / "site/notes.txt").exists()


def test_a_model_page_shows_its_skill_table_with_intervals_the_verdict_and_its_plots(built: Catalog,
                                                                                      tmp_path: Path) -> None:
    build_site(built, tmp_path / "site")
    page = (tmp_path / "site/model-higgs_tabnet.html").read_text()
    assert "ROC AUC [95% interval]" in page and "The model is better than majority" in page
    assert re.search(r"<td>0\.\d+ \[0\.\d+, 0\.\d+\]</td>", page)  # a value with its interval
    assert '<tr class="model">' in page and 'src="reports/higgs_tabnet_v0_run-a_masks.png"' in page
    assert 'href="dataset-index_features.html"' in page


def test_the_lineage_graph_of_predictions_reaches_the_source_file(built: Catalog, tmp_path: Path) -> None:
    build_site(built, tmp_path / "site")
    page = (tmp_path / "site/dataset-higgs_predictions.html").read_text()
    graph = page[page.index('<svg class="lineage"'):page.index("</svg>", page.index('<svg class="lineage"'))]
    for box in ("higgs_predictions v0", "model_registry v0", "index_features v0", "nino34 v0", "oni_small.txt"):
        assert box in graph
    source = built.lineage("nino34").sources[0]
    link = f'sources.html#nino34-v0-{source.sha256[:16]}'
    assert f'href="{link}"' in graph
    sources = (tmp_path / "site/sources.html").read_text()
    row = sources[sources.index(f'id="{link.split("#")[1]}"'):]
    assert source.path in row[:400] and source.sha256 in row[:600]


def test_a_version_reached_by_two_paths_is_drawn_once_below_both(built: Catalog) -> None:
    from shoal.site import _Sources

    graph = lineage_graph(built.lineage_tree("higgs_predictions"), _Sources())
    nodes = {node.label: node for node in graph.nodes}
    assert sum(node.label == "index_features v0" for node in graph.nodes) == 1
    assert nodes["index_features v0"].y > nodes["model_registry v0"].y > nodes["higgs_predictions v0"].y
    assert nodes["oni_small.txt"].y > nodes["nino34 v0"].y
    assert all(parent.y > child.y for child, parent in graph.edges)


def test_a_table_another_tool_wrote_is_summarized_from_its_rows_with_a_histogram(catalog: Catalog,
                                                                                tmp_path: Path) -> None:
    import deltalake

    values = [0.2, 0.9, 0.4, None]
    deltalake.write_deltalake(catalog.uri("table", "outside"), pl.DataFrame({"value": values}).to_arrow())
    build_site(catalog, tmp_path / "site", with_drift=False)
    page = (tmp_path / "site/dataset-outside.html").read_text()
    assert "every row read now" in page
    row = page[page.index('<tr class="column"><td>value</td>'):]
    row = row[:row.index("</tr>")]
    cells = re.findall(r'<td class="num">([^<]+)</td>', row)
    assert cells == ["3", "1", "0.5", f"{np.std([0.2, 0.9, 0.4]):.6g}", "0.2", "0.9"]
    bars = re.findall(r'height="([0-9.]+)"><title>([^<]+)</title>', row)
    assert len(bars) == 20 and [title for height, title in bars if float(height) > 0] == [
        "0.2 .. 0.235: 1", "0.375 .. 0.41: 1", "0.865 .. 0.9: 1"]


def test_statistics_the_commits_stored_are_shown_and_the_histogram_is_counted_between_their_range(
        catalog: Catalog, tmp_path: Path) -> None:
    values = np.array([1.0, 2.0, 4.0, math.nan])
    catalog.write_table("notes", pl.DataFrame({"value": values}), provenance=Provenance(message="noted"))
    (column,) = stored_statistics(catalog, "notes").values()
    expected = RunningStats.from_values(values)
    assert (column.count, column.nulls, column.mean, column.std, column.source) == (
        3, 1, float(expected.mean), float(expected.std), "commit")
    (shown,) = table_statistics(catalog, "notes", 0, stored_statistics(catalog, "notes"))
    assert shown.histogram[0][0] == 1.0 and shown.histogram[0][-1] == 4.0 and sum(shown.histogram[1]) == 3
    assert shown.histogram[1][0] == 1 and shown.histogram[1][-1] == 1  # 1.0 in the first bin, 4.0 in the last
    build_site(catalog, tmp_path / "site", with_drift=False)
    assert "as its commits recorded them" in (tmp_path / "site/dataset-notes.html").read_text()


def test_an_array_variable_shows_its_stored_statistics_and_a_histogram_read_in_slices(built: Catalog) -> None:
    from shoal.site_stats import array_statistics

    stored = stored_statistics(built, "index_features")
    (whole,) = array_statistics(built, "index_features", stored)
    (sliced,) = array_statistics(built, "index_features", stored, chunk=5)  # 5 months at a time
    values = built.open_array("index_features")["index"].values.astype(np.float64)
    expected = np.histogram(values, bins=20, range=(values.min(), values.max()))[0]
    assert whole.histogram[1] == sliced.histogram[1] == tuple(expected) and sum(expected) == len(values)
    assert (whole.count, whole.minimum, whole.maximum, whole.source) == (len(values), -1.0, 1.0, "commit")


def test_a_higgs_column_rescaled_after_the_features_is_the_drift_on_the_first_page(tmp_path: Path) -> None:
    from shoal.datasets import higgs
    from shoal.features.higgs import build
    from tests.test_drift import _higgs_file

    home = Catalog(tmp_path / "home")
    assert higgs.ingest(home, [_higgs_file(tmp_path / "higgs.csv")]).exit_code == 0
    build(home)
    assert higgs.ingest(home, [_higgs_file(tmp_path / "rescaled.csv", rescale=(5, 1.5))]).exit_code == 0
    index = build_site(home, tmp_path / "site").index.read_text()
    drift = index[index.index('<h3 id="drift-higgs">'):index.index('<h3 id="drift-speech">')]
    assert "<strong>drift</strong> in 1 of 28 comparisons" in drift
    first = drift[drift.index("<td>"):drift.index("</tr>", drift.index("<td>"))]
    assert f"<td>{higgs.FEATURES[5]}</td>" in first and "<td>yes</td>" in first  # the largest shift comes first
    assert "No report: " in index[index.index('<h3 id="drift-enso">'):index.index('<h3 id="drift-higgs">')]
    assert "without drift" not in index and "Not computed" not in index


def test_an_empty_home_and_a_file_as_the_site_folder(home: Path, tmp_path: Path) -> None:
    home.mkdir()
    build_site(Catalog(home), tmp_path / "site")
    assert "No datasets yet" in (tmp_path / "site/index.html").read_text()
    (tmp_path / "file").write_text("x")
    result = subprocess.run([sys.executable, "-m", "shoal", "--home", str(home), "catalog", "site",
                             str(tmp_path / "file")], capture_output=True, text=True, timeout=scaled(120))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: the site folder {tmp_path / 'file'} is a file; pass `shoal catalog site` a folder (created when "
        "missing)"]
    nowhere = subprocess.run([sys.executable, "-m", "shoal", "--home", str(home), "catalog", "site"],
                             capture_output=True, text=True, timeout=scaled(120))
    said = " ".join(nowhere.stderr.replace("│", " ").split())  # rich's usage-error box, unwrapped
    assert nowhere.returncode == 2 and "pass the site's folder, e.g. `shoal catalog site site/`, or --serve" in said


def test_serve_answers_on_a_free_local_port_read_only_and_stops_on_ctrl_c(built: Catalog, tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-u", "-m", "shoal", "--home", str(built.home), "catalog", "site",
                                str(tmp_path / "site"), "--serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().startswith("wrote 7 pages (4 datasets, 1 models, 2 plots)")
        served = re.search(r"on (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops it\)", process.stdout.readline())
        assert served, "no address printed"
        with urllib.request.urlopen(served[1] + "dataset-nino34.html", timeout=scaled(30)) as answer:
            assert "oni_small.txt" in answer.read().decode()
        put = urllib.request.Request(served[1] + "index.html", data=b"x", method="PUT")
        with pytest.raises(urllib.error.HTTPError, match="501"):
            urllib.request.urlopen(put, timeout=scaled(30))
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=scaled(30)) == 0 and process.stdout.read().strip() == "stopped"
    finally:
        process.kill()
        process.wait()


def _as_fds_3_and_4(reads: int, writes: int) -> None:
    """In the child: the pipe ends where chromium expects them (copied above 9 first, so neither overwrites the other;
    `pass_fds=(3, 4)` keeps the result open)."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (reads, writes)]
    os.dup2(high[0], 3)
    os.dup2(high[1], 4)


class Browser:
    """Headless chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: fds 3 and 4)."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._writer = os.pipe()
        self._reader, from_browser = os.pipe()
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--no-first-run", "--window-size=1200,900", "about:blank"],
            pass_fds=(3, 4), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _as_fds_3_and_4(to_browser, from_browser))
        os.close(to_browser)
        os.close(from_browser)
        self._next, self._buffer = 0, b""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, session: str | None = None, **params: object) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._writer, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._reader, 1 << 20)
                assert chunk, f"chromium closed the pipe (exit {self.process.poll()})"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next:
                assert "error" not in answer, answer
                return answer["result"]

    def open(self, url: str) -> None:
        """Navigate and wait until the page and its images have loaded."""
        self.send("Page.navigate", self.session, url=url)
        self.evaluate("new Promise(done => document.readyState === 'complete' && location.href !== 'about:blank' "
                      "? done(1) : addEventListener('load', () => done(1)))")

    def evaluate(self, expression: str) -> object:
        found = self.send("Runtime.evaluate", self.session, expression=expression, awaitPromise=True,
                          returnByValue=True)
        assert "exceptionDetails" not in found, found
        return found["result"].get("value")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=scaled(30))
        finally:
            self.process.kill()
            self.process.wait()
            os.close(self._writer)
            os.close(self._reader)


def _screenshot(browser: Browser, name: str) -> None:
    """The whole page as a PNG, kept as the test's artefact in .test-artifacts/site/ (ignored by git) to look at."""
    shot = browser.send("Page.captureScreenshot", browser.session, format="png", captureBeyondViewport=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / name).write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium; .ci/run does)")
def test_in_a_real_browser_datasets_are_listed_a_lineage_link_reaches_the_files_and_images_load(
        built: Catalog, tmp_path: Path) -> None:
    report = build_site(built, tmp_path / "site")
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(report.index.as_uri())
        listed = browser.evaluate("[...document.querySelectorAll('tr.dataset td:first-child a')].map(a => a.textContent)")
        assert listed == ["higgs_predictions", "model_registry", "nino34", "index_features"]
        images = browser.evaluate("[...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert images == [["reports/enso_skill_by_lead.png", True, 180]]  # 3 x 2 inches at 60 dpi: it decoded
        _screenshot(browser, "index.png")

        browser.open((report.out / "dataset-higgs_predictions.html").as_uri())
        _screenshot(browser, "lineage.png")
        link = browser.evaluate("[...document.querySelectorAll('svg.lineage a')].map(a => a.getAttribute('href'))"
                                ".find(href => href.startsWith('sources.html'))")
        browser.open((report.out / link).as_uri().replace("%23", "#"))
        target = browser.evaluate("document.querySelector(':target')?.textContent")
        assert "oni_small.txt" in target and built.lineage("nino34").sources[0].sha256 in target

        browser.open((report.out / "model-higgs_tabnet.html").as_uri())
        assert browser.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)") is True
        assert browser.evaluate("document.querySelector('p.verdict').textContent").startswith("The model is better")
        _screenshot(browser, "model.png")
    finally:
        browser.close()


def test_an_arrays_shape_reads_time_lat_lon_first_whatever_order_the_lineage_stored() -> None:
    from shoal.site import _shape

    shape = {"lon": 360, "sha256_byte": 32, "lat": 180, "time": 66}
    assert _shape(shape) == "time 66 × lat 180 × lon 360 × sha256_byte 32"
