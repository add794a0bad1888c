"""Generic Prefect flows over the task registry: features, train, predict, and the whole pipeline.

Each flow takes the task's name and its settings as a plain dict (the same names as the
command-line options, e.g. {"coarsen": 4, "leads": "1,3,6"}), validated by the task's
pydantic settings at the flow boundary; each Prefect task is one call into the generic run
functions of `shoal.models.runs`. No flow knows a task by name.

Run by a command on a terminal, the tasks report their stages to the command's progress bar
(`shoal.flows.terminal`); elsewhere, one run-log line per stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from shoal import cluster
from shoal.catalog import Catalog
from shoal.flows.ingest import SHOWN, IngestFailed, _transient, flow_dask_client, ingest_source
from shoal.models.runs import Trained, predict_model, train_model
from shoal.progress import NULL
from shoal.sources import IngestReport
from shoal.flows.terminal import stage_reporter
from shoal.threads import apply_threads
from shoal.contract import FeatureBuild, Predicted, Task, get_task



# The event a feature build emits when it made a NEW version: `shoal serve`'s train + predict
# deployments are triggered by it (a build skipped as unchanged emits nothing).
NEW_FEATURES = "shoal.features.new"


@task(retries=1, retry_delay_seconds=1, retry_condition_fn=_transient)
def features_task(task_name: str, home: str | None, settings: dict[str, Any]) -> FeatureBuild:
    """Build or reuse the task's feature version of the newest inputs; a new one is announced as an event."""
    apply_threads()
    chosen = get_task(task_name)
    catalog = Catalog(home)
    build = cluster.on(flow_dask_client(), chosen.build_features, spreads=chosen.spreads)(catalog, chosen.parse(settings), stage_reporter())
    if not build.reused:
        emit_event(event=NEW_FEATURES, resource={"prefect.resource.id": f"shoal.features.{task_name}",
                                                 "shoal.home": catalog.home},
                   payload={"task": task_name, "version": build.version, "snapshot": build.snapshot})
    return build


@task
def train_task(task_name: str, home: str | None, settings: dict[str, Any], feature_version: str | None,
               retrain: bool, run_id: str | None = None, restart: bool = False, nproc: int | None = None) -> Trained:
    """Train (or resume, or reuse) and register the task's model; with `nproc` > 1 on that many processes (DDP).

    The arguments mean what `shoal train`'s options of the same names do.
    """
    if nproc is not None and nproc > 1:
        from shoal.models.distributed import launch

        trained = launch(nproc, train_rank, task_name, home, settings, feature_version, run_id, restart, retrain)
    else:
        chosen = get_task(task_name)
        trained = train_model(Catalog(home), chosen, chosen.parse(settings), feature_version=feature_version,
                              run_id=run_id, restart=restart, retrain=retrain, reporter=stage_reporter())
    entry = trained.entry
    get_run_logger().info("model %s version %s (%s), run %s", entry.name, entry.version,
                          "reused" if trained.reused else "new", trained.run_id, extra=SHOWN)
    return trained


def train_rank(task_name: str, home: str | None, settings: dict[str, Any], feature_version: str | None,
               run_id: str | None, restart: bool, retrain: bool) -> Trained | None:
    """`train_model` in one of the processes `train_task` launches; rank 0 returns the registered model.

    Module-level with positional arguments, as torch's launcher starts it in each process. The
    processes are not the flow run's, so their epochs are not in its log (the model line is).
    """
    chosen = get_task(task_name)
    return train_model(Catalog(home), chosen, chosen.parse(settings), feature_version=feature_version, run_id=run_id,
                       restart=restart, retrain=retrain, reporter=NULL)


@task
def predict_task(task_name: str, home: str | None, model_version: int | None, device: str,
                 force: bool = False) -> Predicted:
    """Write the predictions of a registered model (not again for a model version that has them, unless `force`)."""
    apply_threads()
    _, predicted = predict_model(Catalog(home), get_task(task_name), model_version=model_version, device=device,
                                 force=force)
    get_run_logger().info("%s version %s (%s): %d rows; plots %s", predicted.table, predicted.version,
                          "unchanged: skipped" if predicted.reused else "new", predicted.rows,
                          [str(p) for p in predicted.plots], extra=SHOWN)
    return predicted


@flow(name="build-features", flow_run_name="{task_name}-features")
def build_features(task_name: str, home: str | None = None, settings: dict[str, Any] | None = None) -> FeatureBuild:
    """Build (or reuse) a task's features from the newest inputs."""
    get_task(task_name).parse(settings or {})
    return features_task(task_name, home, settings or {})


@flow(name="train-model", flow_run_name="{task_name}-train")
def train(task_name: str, home: str | None = None, settings: dict[str, Any] | None = None,
          feature_version: str | None = None, retrain: bool = False) -> Trained:
    """Train a task's model on a feature version (default the newest)."""
    get_task(task_name).parse(settings or {})
    return train_task(task_name, home, settings or {}, feature_version, retrain)


@flow(name="predict", flow_run_name="{task_name}-predict")
def predict(task_name: str, home: str | None = None, model_version: int | None = None,
            device: str = "auto") -> Predicted:
    """Write the predictions of a task's registered model (default the newest)."""
    return predict_task(task_name, home, model_version, device)


@dataclass(frozen=True)
class PipelineResult:
    """What `pipeline` did: every ingest report, the features, the model, the predictions."""

    ingests: tuple[IngestReport, ...]
    features: FeatureBuild
    trained: Trained
    predicted: Predicted

    @property
    def failures(self) -> tuple[str, ...]:
        """One line per input that failed to ingest (the rest were committed and used)."""
        return tuple(failure for report in self.ingests for failure in report.failures)


@flow(name="pipeline", flow_run_name="{task_name}-pipeline")
def pipeline(task_name: str, paths: list[Path], home: str | None = None, settings: dict[str, Any] | None = None,
             retrain: bool = False, feature_version: str | None = None, run_id: str | None = None,
             restart: bool = False, nproc: int | None = None, force: bool = False) -> PipelineResult:
    """Ingest -> features -> train -> predict for one task, each step a Prefect task.

    Bad input files are reported and the good ones used: the pipeline stops only when a
    source committed nothing at all (nor had anything unchanged). On a `DaskTaskRunner`
    (`shoal run TASK --cluster ...`) the ingests of sources that spread decode on its workers,
    and a feature build that spreads (ENSO) reads its inputs there; the training and the
    predictions run in this process either way (on `nproc` processes of this machine, the training).

    `retrain`, `run_id`, `restart` and `nproc` are `shoal train`'s; `force` is `shoal predict`'s.
    `feature_version` trains on that version instead of the one the features stage built (which
    still runs, so the store holds the features of the newest inputs).
    """
    settings = settings or {}
    chosen = get_task(task_name)
    parsed = chosen.parse(settings)
    reports = []
    for source, source_paths in chosen.sources(paths):
        report = ingest_source(source=source, paths=source_paths, home=home)
        if report.exit_code == 2:
            raise IngestFailed("; ".join(report.failures) or f"{source}: nothing to ingest in {source_paths}")
        reports.append(report)
    features = features_task(task_name, home, settings)
    trained = train_task(task_name, home, settings, feature_version or features.snapshot, retrain, run_id, restart,
                         nproc)
    predicted = predict_task(task_name, home, trained.entry.version, parsed.device, force)
    result = PipelineResult(ingests=tuple(reports), features=features, trained=trained, predicted=predicted)
    create_markdown_artifact(key=f"{task_name}-pipeline", markdown=summary(chosen, result),
                             description=f"{task_name}: test skill beside the baselines, versions, plots")
    return result


def summary(chosen: Task, result: PipelineResult) -> str:
    """The run's artifact: the test skill table with its baselines, every version it used or made, its plots."""
    entry, skill = result.trained.entry, chosen.skill_table(dict(result.trained.entry.metrics))
    lines = [f"### {skill.title}", "", "| " + " | ".join(skill.columns) + " |", "|" + "---|" * len(skill.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in skill.rows]
    lines += ["", skill.verdict, "", "| stage | version | |", "|---|---|---|"]
    lines += [f"| ingest {r.dataset} | {r.version} | {len(r.committed)} committed, {len(r.unchanged)} unchanged, "
              f"{len(r.failures)} failed |" for r in result.ingests]
    lines += [f"| features | {result.features.snapshot} | {'unchanged' if result.features.reused else 'new'} |",
              f"| model {entry.name} | {entry.version} | {'unchanged' if result.trained.reused else 'new'} "
              f"(run {result.trained.run_id}) |",
              f"| {result.predicted.table} | {result.predicted.version} | "
              f"{'unchanged' if result.predicted.reused else 'new'} |", "", "Plots:", ""]
    lines += [f"- `{path}`" for path in result.predicted.plots]
    return "\n".join(lines)
