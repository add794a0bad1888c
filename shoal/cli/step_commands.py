"""The steps of a task, without Prefect: `shoal features|train|tune|evaluate|predict TASK`."""

from __future__ import annotations

from typing import Any

import typer

from shoal.cli.operations import _cluster
from shoal.cli.output import (_console, _print_json, _print_predicted, _print_skill, _print_trained, _reporter,
                              _trained_facts)
from shoal.cli.root import _catalog, _fail, _State
from shoal.cli.steps import _step


@_step("features", options=("cluster",))
def features_command(task_name: str, given: dict[str, Any], *, cluster: str | None) -> None:
    """Build (or reuse) the task's feature version from the newest inputs (ENSO: the SST read on --cluster's workers)."""
    from shoal.cluster import connect, on
    from shoal.contract import get_task

    task = get_task(task_name)
    settings = task.parse(given)
    spec = _cluster(cluster, task.spreads, f"features {task_name}")
    with connect(spec) as client, _reporter() as reporter:
        on(client, task.build_features, spreads=task.spreads)(_catalog(), settings, reporter)


@_step("train", options=("feature_version", "run_id", "restart", "retrain", "params", "nproc",
                         "as_json"))
def train_command(task_name: str, given: dict[str, Any], *, feature_version: str | None, run_id: str | None,
                  restart: bool, retrain: bool, params: str | None, nproc: int | None, as_json: bool) -> None:
    """Train the task's model (resuming an interrupted identical run), evaluate it on test, register it.

    With --nproc N on N processes; `torchrun --nproc-per-node N -m shoal train ...` works too.
    """
    from shoal.contract import get_task

    task = get_task(task_name)
    given = _with_params(task, given, params, feature_version)
    settings = task.parse(given)
    arguments = (task_name, given, _catalog().home, _State.quiet, feature_version, run_id, restart, retrain)
    if nproc is not None and nproc > 1:
        from shoal.models.distributed import launch

        _check_nproc(settings, nproc)
        trained = launch(nproc, _train_rank, *arguments)
    else:
        trained = _train_rank(*arguments)
    if trained is None:  # another rank of a torchrun launch: rank 0 reports
        return
    if as_json:
        _print_json(_trained_facts(trained))
        return
    _print_trained(task, trained)


def _with_params(task: Any, given: dict[str, Any], params: str | None,
                 feature_version: str | None = None) -> dict[str, Any]:
    """The options given, over the settings of the best `shoal tune` trial with `--params best`.

    The trial is the best of the study that matches the feature version trained on (`feature_version`, default the
    newest) and the given --epochs, --max-batches and --seed (`shoal.models.tune.best_params`).
    """
    if params not in (None, "best"):
        _fail(f"--params: expected 'best' (the best `shoal tune {task.name}` trial), got {params!r}")
    if params == "best":
        from shoal.models.tune import best_params, finished_studies

        catalog = _catalog()
        finished_studies(catalog, task)  # no study at all is said as such, before the features are looked for
        feature = task.prepare(catalog, task.parse(given), feature_version).feature
        best = best_params(catalog, task, feature=feature, given=given)
        used = ", ".join(f"{key}={value:.4g}" for key, value in best.params.items() if key not in given)
        kept = ", ".join(f"--{key.replace('_', '-')}" for key in best.params if key in given)
        typer.echo(f"--params best: the best `shoal tune {task.name}` trial's {used or 'settings'}"
                   f"{f' (given, so kept: {kept})' if kept else ''}; trial {best.number}, validation loss "
                   f"{best.value:.4f}, of the study '{best.study}'"
                   f"{'' if best.key else ' (from before studies were keyed: its trials may mix samples)'}",
                   err=True)  # stderr: --json stays JSON
        return {**best.params, **given}
    return given


def _check_nproc(settings: Any, nproc: int) -> None:
    """Refuse an `--nproc` that cannot run, in one line now rather than from every rank."""
    from shoal.models.distributed import check_batch, env_world

    if env_world()[1] > 1:
        _fail(f"--nproc {nproc}: this process is already one of the {env_world()[1]} that torchrun started; "
              "pass --nproc to shoal or --nproc-per-node to torchrun, not both")
    check_batch(settings.batch_size, nproc)


@_step("tune", options=("trials", "sample_fraction", "timeout"))
def tune_command(task_name: str, given: dict[str, Any], *, trials: int | None, sample_fraction: float | None,
                 timeout: float | None) -> None:
    """Search the task's hyperparameters with Optuna on a sample, scored on valid; resumable.

    One study per feature version, sample fraction, seed and epoch budget, so that its trials compare like with like.
    """
    import sys

    from rich.table import Table

    from shoal.contract import get_task
    from shoal.models.tune import study_key, tune

    task, catalog = get_task(task_name), _catalog()
    settings, fraction = task.parse(given), 1e-3 if sample_fraction is None else sample_fraction
    console = _console()
    live = not _State.quiet and sys.stdout.isatty()  # the table below says it all where no one watches
    found = tune(catalog, task, settings, trials=8 if trials is None else trials, sample_fraction=fraction,
                 timeout=timeout,
                 on_trial=(lambda trial, best: console.print(_trial_line(trial, best), markup=False, highlight=False))
                 if live else None)
    key = study_key(task, settings, task.prepare(catalog, settings, None), fraction)
    table = Table("trial", "state", "validation loss", "epochs", "settings",
                  title=f"shoal tune {task_name}: the study of {key.name}")
    for trial in found:
        table.add_row(str(trial.number), trial.state, _loss(trial), str(trial.epochs), _settings(trial.params))
    console.print(table)
    done = [t for t in found if t.value is not None and t.state == "COMPLETE"]
    if done:
        best = min(done, key=lambda t: t.value)
        console.print(f"best: trial {best.number}, validation loss {best.value:.4f}; train it with "
                      f"`shoal train {task_name} --params best`", markup=False, highlight=False)


def _settings(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value:.4g}" for key, value in params.items())


def _loss(trial: Any) -> str:
    """A trial's validation loss: its best, or for a pruned one the loss it was stopped at."""
    if trial.value is not None:
        return f"{trial.value:.4f}"
    return "" if trial.last_loss is None else f"{trial.last_loss:.4f} at epoch {trial.epochs}"


def _trial_line(trial: Any, best: Any) -> str:
    """One finished trial as `shoal tune` shows it while the search runs."""
    state = {"COMPLETE": "", "PRUNED": f" (pruned after epoch {trial.epochs})"}.get(trial.state, f" ({trial.state})")
    loss = "" if trial.value is None and trial.last_loss is None else \
        f"validation loss {trial.value if trial.value is not None else trial.last_loss:.4f}"
    so_far = "no trial finished yet" if best is None else f"trial {best.number}, {best.value:.4f}"
    return f"trial {trial.number}: {_settings(trial.params)}: {loss or 'no loss'}{state}; best so far: {so_far}"


def _train_rank(task_name: str, given: dict[str, Any], home: str, quiet: bool, feature_version: str | None,
                run_id: str | None, restart: bool, retrain: bool) -> Any:
    """`train_model` in this process: all of the training, or one rank's part.

    Module-level with positional arguments, as torch's launcher needs to start it in each rank.
    """
    from shoal.catalog import Catalog
    from shoal.models.distributed import env_world
    from shoal.models.runs import train_model
    from shoal.progress import RichReporter
    from shoal.contract import get_task

    task = get_task(task_name)
    with RichReporter(_console(), enabled=not quiet and env_world()[0] == 0) as reporter:
        return train_model(Catalog(home), task, task.parse(given), feature_version=feature_version, run_id=run_id,
                           restart=restart, retrain=retrain, reporter=reporter)


@_step("evaluate", options=("model_version", "as_json"))
def evaluate_command(task_name: str, given: dict[str, Any], *, model_version: int | None, as_json: bool) -> None:
    """Skill of a registered model on the task's test split, beside the baselines."""
    from shoal.contract import get_task
    from shoal.lineage import version_label
    from shoal.models.runs import evaluate_model

    task = get_task(task_name)
    settings = task.parse(given)
    entry, metrics = evaluate_model(_catalog(), task, model_version=model_version, device=settings.device)
    if as_json:
        _print_json({"model": entry.name, "version": entry.version, **metrics})
        return
    _console().print(f"model {entry.name} version {entry.version} on {entry.feature_dataset} "
                     f"{version_label(_catalog(), entry.feature)}",
                     markup=False, highlight=False)
    _print_skill(task, metrics)


@_step("predict", options=("model_version", "force"))
def predict_command(task_name: str, given: dict[str, Any], *, model_version: int | None, force: bool) -> None:
    """Write the task's predictions of a registered model, once per model version (--force replaces them)."""
    from shoal.models.runs import predict_model
    from shoal.contract import get_task

    task = get_task(task_name)
    settings = task.parse(given)
    entry, predicted = predict_model(_catalog(), task, model_version=model_version, device=settings.device, force=force)
    _print_predicted(entry, predicted)
