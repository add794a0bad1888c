"""The ENSO task: the ConvLSTM forecaster of the Niño 3.4 anomaly and phase at several leads.

Splits by target month (see `shoal.features.enso`): train before `valid_start`, validation
(early stopping and the best epoch only) until `test_start`, test from `test_start` — the only
skill reported. At every lead L the model is shown beside three baselines fitted on the
training months only and scored on the same test rows:

- persistence: the anomaly (and phase) of the last input month, L months before the target;
- climatology: the training mean anomaly, and most frequent phase, of the target's calendar month;
- linear: a least-squares autoregression of the target anomaly on the 6 input months'
  anomalies plus the month of year (one-hot), one fit per lead; its phase is the predicted
  anomaly's: E at >= +0.5 °C, L at <= -0.5 °C, else N.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, ValidationInfo, field_validator

from shoal.errors import CatalogError
from shoal.features.enso import DATASET as FEATURES
from shoal.features.enso import PERIODS, PHASES, EnsoFeatureConfig, EnsoFeatures, IndexSeries, build, split_record
from shoal.lineage import InputVersion, Provenance
from shoal.stats import RunningStats
from shoal.contract import (FeatureBuild, FeatureSet, Predicted, Prepared, Task, TaskSettings, feature_loader,
                            register_task, replacing)
from shoal.evaluation import Metric, Scoring, accuracy_of, correlation_of, rmse_of, score

if TYPE_CHECKING:
    import torch
    from distributed import Client

    from shoal.catalog import Catalog
    from shoal.models.registry import ModelVersion
    from shoal.progress import Reporter

PREDICTION_SCHEMA = pa.schema([
    ("target_month", pa.date32()), ("lead", pa.int32()), ("issued_month", pa.date32()), ("kind", pa.string()),
    ("period", pa.string()), ("predicted_anom_c", pa.float64()), ("observed_anom_c", pa.float64()),
    ("phase", pa.string()), ("prob_e", pa.float64()), ("prob_l", pa.float64()), ("prob_n", pa.float64()),
    ("model", pa.string()), ("model_version", pa.int64()), ("feature_version", pa.string()), ("run_id", pa.string()),
])
METHODS = ("model", "persistence", "climatology", "linear")
PHASE_THRESHOLD = 0.5  # °C of anomaly: the NOAA El Niño / La Niña threshold


class EnsoSettings(TaskSettings):
    """Options of the ENSO task (`--valid-start`, `--test-start`, `--coarsen`, `--leads` and the shared ones)."""

    feature_fields = ("split", "valid_start", "test_start", "coarsen")
    split: Literal["by_time"] = Field(
        "by_time", description="by_time, the one rule of a series: neighbouring months are alike, so a random "
                               "split of months would put near-copies of test months in train.")
    valid_start: str = Field("1990-01", description="First validation month, YYYY-MM; training is before it.")
    test_start: str = Field("2005-01", description="First test month, YYYY-MM; the only months skill is reported on.")
    coarsen: int = Field(1, ge=1, le=30, description="Average blocks of N x N 1° cells (1 = the analysis' grid).")
    leads: tuple[int, ...] = Field((1,), description="Forecast leads in months, e.g. 1,3,6,9,12 (1 = the next month).")

    @field_validator("valid_start", "test_start")
    @classmethod
    def _month(cls, value: str, info: ValidationInfo) -> str:
        try:
            month = np.datetime64(value, "M")
        except ValueError:
            month = None
        if month is None or len(value) != 7 or str(month) != value:
            raise ValueError("expected YYYY-MM")
        if info.field_name == "test_start" and "valid_start" in info.data and value <= info.data["valid_start"]:
            raise ValueError(f"expected a month after --valid-start {info.data['valid_start']}")
        return value

    @field_validator("leads", mode="before")
    @classmethod
    def _leads(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = [int(part) for part in value.split(",")]
            except ValueError:
                raise ValueError("expected whole months separated by commas, e.g. 1,3,6") from None
        if not value or any(not 1 <= int(lead) <= 24 for lead in value) or list(value) != sorted(set(value)):
            raise ValueError("expected distinct increasing leads from 1 to 24 months, e.g. 1,3,6")
        return tuple(value)


SCORING = Scoring(
    title="Niño 3.4 anomaly, test period from {test_start}",
    metrics=(Metric("correlation", "correlation", correlation_of("anomaly", "anomaly")),
             Metric("rmse_c", "RMSE °C", rmse_of("anomaly", "anomaly"), higher_is_better=False),
             Metric("phase_accuracy", "phase accuracy", accuracy_of("phase", "phase"))),
    primary="correlation", count="months", group="lead", block=12)
# The same metrics by target season: months of one season are 3 a year, so a block of 12 spans 4 years.
SEASONS = ("DJF", "MAM", "JJA", "SON")  # a target month's season: (month of year + 1) // 3 mod 4
SEASON_SCORING = Scoring(title="Niño 3.4 anomaly by target season, test period from {test_start}",
                         metrics=SCORING.metrics, primary="correlation", count="months", group="season", block=12)


def season_of(months: np.ndarray) -> np.ndarray:
    """The season name of each month (datetime64[M]): DJF, MAM, JJA or SON."""
    return np.array(SEASONS)[(months.astype(int) % 12 + 1) // 3 % 4]


def threshold_phase(anomaly: np.ndarray) -> np.ndarray:
    """Phase codes from anomalies (°C): E (0) at >= +0.5, L (1) at <= -0.5, else N (2)."""
    return np.where(anomaly >= PHASE_THRESHOLD, 0, np.where(anomaly <= -PHASE_THRESHOLD, 1, 2))


def _linear_fit_rows(series: IndexSeries, lead: int) -> np.ndarray:
    """The training origins the linear baseline is fitted on at `lead`; too few for its coefficients is an error."""
    fit = series.rows(lead, "train")
    if len(fit) <= series.window + 12:
        raise CatalogError(f"only {len(fit)} training months for the linear baseline at lead {lead} (it needs more "
                           f"than {series.window + 12}); ingest more SST months before --valid-start")
    return fit


def _no_test_month(features: EnsoFeatures) -> CatalogError:
    return CatalogError(f"no test month in enso_features version {features.version}: ingest SST months from "
                        f"--test-start ({features.config.test_start}) on, or build features with an earlier --test-start")


def baselines(series: IndexSeries, origins: np.ndarray, lead: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Anomaly (°C) and phase code forecasts of each baseline for `origins` at `lead`, fitted on train only."""
    anomaly, phase = series.anomaly, series.phase
    calendar = series.months.astype(int) % 12
    train = series.present & (series.split == 0)
    climate = np.array([anomaly[train & (calendar == m)].mean() if (train & (calendar == m)).any() else 0.0
                        for m in range(12)])
    climate_phase = np.array([np.bincount(phase[train & (calendar == m)], minlength=3).argmax() for m in range(12)])

    def design(rows: np.ndarray) -> np.ndarray:  # (N, window + 12): the input anomalies, the month of year
        lags = anomaly[rows[:, None] + np.arange(-series.window, 0)]
        return np.hstack([lags, np.eye(12)[calendar[rows - 1]]])

    fit = _linear_fit_rows(series, lead)
    coefficients = np.linalg.lstsq(design(fit), anomaly[fit - 1 + lead], rcond=None)[0]
    linear = design(origins) @ coefficients
    target = calendar[origins - 1 + lead]
    return {
        "persistence": (anomaly[origins - 1], phase[origins - 1]),
        "climatology": (climate[target], climate_phase[target]),
        "linear": (linear, threshold_phase(linear)),
    }


def _forecast(model: Any, features: EnsoFeatures, origins: np.ndarray, *, device: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's anomaly (N, L) in °C and phase probabilities (N, L, 3) for `origins`."""
    import torch

    from shoal.models.inference import predict

    out = predict(model, features.inputs(origins), batch_size=16, device=device)
    stats = features.index_stats
    anomaly = out.index.numpy().astype(np.float64) * float(stats.std) + float(stats.mean)
    return anomaly, torch.softmax(out.phase_logits, dim=-1).numpy().astype(np.float64)


_features = feature_loader("enso", FEATURES, EnsoFeatures)


class _Loss:
    """The ConvLSTM loss with the land mask kept on each device it is asked for (no copy per step)."""

    def __init__(self, land: torch.Tensor, config: Any) -> None:
        self.land, self.config, self._on = land, config, {}

    def __call__(self, output: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        from shoal.models.convlstm import enso_loss

        device = output.index.device
        if device not in self._on:
            self._on[device] = self.land.to(device)
        return enso_loss(output, batch, self._on[device], self.config)


def sample_note(catalog: Catalog, features: EnsoFeatures) -> str | None:
    """A line for the plots when the SST of `features` came from the sample generator, else None.

    The signal is the "sample_months" fact ingest records from the generator's GRIB mark, not a file name.
    """
    from shoal.datasets.cobe_sst import sample_months

    lineage = catalog.lineage(FEATURES, version=features.snapshot)
    sst = [item for item in (lineage.inputs if lineage else ()) if item.name == "sst"]
    months = sample_months(catalog, version=sst[0].version) if sst else []
    if not months:
        return None
    return (f"SST: synthetic sample data from shoal.datasets.cobe_sst_sample in {len(months)} months "
            f"({months[0]} .. {months[-1]}), not COBE-SST observations")


@register_task("enso")
class Enso(Task):
    """ENSO: COBE-SST + Niño 3.4 -> `enso_features` -> ConvLSTM -> `enso_predictions`."""

    model_name = "enso_convlstm"
    architecture = "convlstm"
    predictions = "enso_predictions"
    settings = EnsoSettings
    scoring = SCORING
    spreads = True

    def sources(self, paths: Sequence[Path]) -> list[tuple[str, list[Path]]]:
        """GRIB files or folders -> `sst`; a `.txt` table -> `oni` (default: the embedded real one)."""
        from shoal.datasets.oni import SAMPLE

        tables = [Path(p) for p in paths if Path(p).suffix == ".txt"]
        return [("sst", [Path(p) for p in paths if Path(p).suffix != ".txt"]), ("oni", tables or [SAMPLE])]

    def build_features(self, catalog: Catalog, settings: EnsoSettings, reporter: Reporter, *,
                       client: Client | None = None) -> FeatureBuild:
        """Build (or reuse) `enso_features` for the latest `sst` and `nino34` (the SST read on `client`'s cluster)."""
        config = EnsoFeatureConfig(valid_start=settings.valid_start, test_start=settings.test_start,
                                   coarsen=settings.coarsen)
        return build(catalog, config=config, reporter=reporter, client=client)

    def prepare(self, catalog: Catalog, settings: EnsoSettings, feature_version: int | str | None) -> Prepared:
        """The ConvLSTM sized to the features' grid, with one output per lead, and the two splits."""
        from shoal.models.convlstm import ConvLSTM, ConvLSTMConfig

        features = _features(catalog, feature_version)
        height, width = features.sst.shape[-2:]
        config = ConvLSTMConfig(height=height, width=width, leads=settings.leads)
        train, valid = features.windows("train", settings.leads), features.windows("valid", settings.leads)
        for name, windows, period in (("training", train, "before --valid-start"),
                                      ("validation", valid, "from --valid-start to --test-start")):
            if len(windows) == 0:
                raise CatalogError(f"no complete {name} window at leads {list(settings.leads)} in enso_features "
                                   f"version {features.version}: ingest SST months {period} "
                                   f"({features.config.valid_start} / {features.config.test_start})")
        for lead in settings.leads:  # what evaluate needs, checked before training rather than after it
            _linear_fit_rows(features.series, lead)
        if not any(len(features.series.rows(lead, "test")) for lead in settings.leads):
            raise _no_test_month(features)
        return Prepared(feature=InputVersion(FEATURES, "array", features.snapshot), model_config=asdict(config),
                        build=lambda: ConvLSTM(config), loss_fn=_Loss(features.land, config),
                        train_data=train, valid_data=valid)

    def model(self, model_config: Mapping[str, Any]) -> Any:
        """The ConvLSTM of a stored configuration."""
        from shoal.models.convlstm import ConvLSTM, ConvLSTMConfig

        return ConvLSTM(ConvLSTMConfig.from_dict(model_config))

    def evaluate(self, catalog: Catalog, model: Any, *, feature_version: str, model_config: Mapping[str, Any],
                 device: str) -> dict[str, Any]:
        """Correlation, RMSE and phase accuracy by lead on the test months: the model and each baseline."""
        features = _features(catalog, feature_version)
        leads = tuple(model_config["leads"])
        rows = {lead: features.series.rows(lead, "test") for lead in leads}
        if not any(len(r) for r in rows.values()):
            raise _no_test_month(features)
        origins = np.unique(np.concatenate(list(rows.values())))
        anomaly, probabilities = _forecast(model, features, origins, device=device)
        observed_phase = features.phase.numpy()
        skill, by_season = [], []
        for column, lead in enumerate(leads):
            at, targets = np.searchsorted(origins, rows[lead]), rows[lead] - 1 + lead
            truth = {"anomaly": features.anomaly[targets], "phase": observed_phase[targets]}
            forecasts = {"model": (anomaly[at, column], probabilities[at, column].argmax(axis=1))}
            forecasts |= baselines(features.series, rows[lead], lead)
            forecasts = {name: {"anomaly": value, "phase": phase} for name, (value, phase) in forecasts.items()}
            skill += score(SCORING, truth, forecasts, group=lead)
            seasons = season_of(features.months[targets])
            for season in SEASONS:
                chosen = seasons == season
                if chosen.sum() >= 2:
                    pick = lambda items: {key: value[chosen] for key, value in items.items()}  # noqa: E731
                    by_season += [{"lead": lead, **row} for row in score(
                        SEASON_SCORING, pick(truth), {name: pick(f) for name, f in forecasts.items()}, group=season)]
        return {"period": "test", "test_start": features.config.test_start, "valid_start": features.config.valid_start,
                "leads": list(leads), "skill": skill, "by_season": by_season}

    def predict(self, catalog: Catalog, model: Any, entry: ModelVersion, *, device: str) -> Predicted:
        """Hindcasts of every validation and test month at every lead, and the forecast from the newest window."""
        from shoal.models.reports import plot_hindcast, plot_seasons, plot_skill

        features = _features(catalog, entry.feature_version)
        leads = tuple(entry.config["model"]["leads"])
        origins = features.series.origins()
        if len(origins) == 0:
            raise CatalogError(f"enso_features version {features.version} has no {features.window} consecutive months")
        end = len(features.months)
        targets = origins[:, None] - 1 + np.array(leads)  # (N, L)
        inside = np.minimum(targets, end - 1)
        hindcast = (targets < end) & features.present[inside] & (features.split[inside] > 0)
        wanted = hindcast.any(axis=1)
        wanted[-1] = True  # the newest window: the forecast
        origins, targets, hindcast = origins[wanted], targets[wanted], hindcast[wanted]
        anomaly, probabilities = _forecast(model, features, origins, device=device)
        rows = []
        for i, origin in enumerate(origins):
            issued = features.months[origin - 1]
            for column, lead in enumerate(leads):
                forecast = i == len(origins) - 1 and targets[i, column] >= end
                if not (hindcast[i, column] or forecast):
                    continue
                target = targets[i, column]
                probs = probabilities[i, column]
                rows.append({
                    "target_month": _date(issued + lead), "lead": lead, "issued_month": _date(issued),
                    "kind": "forecast" if forecast else "hindcast",
                    "period": None if forecast else PERIODS[features.split[target]],
                    "predicted_anom_c": float(anomaly[i, column]),
                    "observed_anom_c": None if forecast else float(features.anomaly[target]),
                    "phase": PHASES[int(probs.argmax())], "prob_e": float(probs[0]), "prob_l": float(probs[1]),
                    "prob_n": float(probs[2]), "model": self.model_name, "model_version": entry.version,
                    "feature_version": entry.feature_version, "run_id": entry.run_id,
                })
        table = pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)
        version = catalog.write_table(self.predictions, table, **replacing(entry), provenance=Provenance(
            inputs=(entry.feature, InputVersion("model_registry", "table", entry.registry_version)),
            parameters={"model": self.model_name, "model_version": entry.version, "run_id": entry.run_id, "leads": list(leads)},
            message=f"{self.model_name} v{entry.version}: {len(rows)} predictions at leads {list(leads)}",
        ))
        name = f"{self.model_name}_v{entry.version}_{entry.run_id}"
        plots = (plot_hindcast(Path(catalog.local, "reports", f"{name}_hindcast.png"), table, lead=leads[0],
                               title=f"{self.model_name} v{entry.version}: Niño 3.4 anomaly at lead {leads[0]}",
                               note=sample_note(catalog, features)),
                 plot_skill(Path(catalog.local, "reports", f"{name}_skill.png"), entry.metrics["skill"],
                            title=f"{self.model_name} v{entry.version}: test correlation by lead"))
        if entry.metrics.get("by_season"):  # models evaluated before seasons were scored have none
            plots += (plot_seasons(Path(catalog.local, "reports", f"{name}_seasons.png"), entry.metrics["by_season"],
                                   SEASONS, title=f"{self.model_name} v{entry.version}: test skill by lead and "
                                                  "target season"),)
        return Predicted(table=self.predictions, version=version, rows=len(rows), plots=tuple(sorted(plots)))

    def open_features(self, catalog: Catalog, version: int | str | None) -> FeatureSet:
        """sst (T, 1, H, W) normalized anomalies, index, phase and month of the split's months; lead-1 windows as datasets.

        `shoal.features.enso.EnsoFeatures(...).windows(split, leads)` gives windows for other
        leads; the arrays are views of the one grid series in memory.
        """
        features = _features(catalog, version)

        def arrays(split: str) -> dict[str, np.ndarray]:
            months = features.split == PERIODS.index(split)
            return {"sst": features.sst[months].numpy(), "index": features.index[months].numpy(),
                    "phase": features.phase[months].numpy(), "month": features.months[months]}

        statistics = {name: RunningStats.from_dict(value) for name, value in features.parameters["statistics"].items()}
        return FeatureSet(task=self.name, dataset=FEATURES, version=features.version, statistics=statistics,
                          split=split_record(features.config, features.split[features.present]), splits=PERIODS,
                          arrays_of=arrays, dataset_of=lambda split: features.windows(split, (1,)))


def _date(month: np.datetime64) -> Any:
    return np.datetime64(month, "M").astype("datetime64[D]").astype(object)
