"""ENSO flows: ingest COBE-SST, build features, train the ConvLSTM, predict; and the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from shoal.catalog import Catalog
from shoal.datasets.oni import SAMPLE
from shoal.features.enso import EnsoFeatureConfig, FeatureBuild, build
from shoal.flows.ingest import finish, ingest_source
from shoal.models.convlstm import ConvLSTMConfig
from shoal.models.enso import predict_enso as predict_core
from shoal.models.enso import train_enso as train_core
from shoal.models.registry import ModelVersion
from shoal.models.train import TrainConfig
from shoal.sources import IngestReport


Month = Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
Coarsen = Annotated[int, Field(ge=1, le=30)]


class EnsoSettings(BaseModel):
    """Flow parameters of the ENSO pipeline, validated by pydantic at the flow boundary."""

    train_end: Month = "1990-01"
    coarsen: Coarsen = 1
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(4, ge=1)
    max_batches_per_epoch: int | None = Field(None, ge=1)
    seed: int = 0
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|mps)$")


@task(retries=1, retry_delay_seconds=1)
def build_features_task(home: str | None, train_end: str, coarsen: int) -> FeatureBuild:
    """Build or reuse the ENSO feature version of the latest `sst` and `nino34`."""
    built = build(Catalog(home), config=EnsoFeatureConfig(train_end=train_end, coarsen=coarsen))
    get_run_logger().info("enso_features version %s (%s)", built.version, "reused" if built.reused else "new")
    return built


@task
def train_task(home: str | None, settings: EnsoSettings, feature_version: int | str | None) -> ModelVersion:
    """Train, evaluate and register the ConvLSTM."""
    entry = train_core(
        Catalog(home),
        model_config=ConvLSTMConfig(),
        train_config=TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, seed=settings.seed,
                                 device=settings.device, max_batches_per_epoch=settings.max_batches_per_epoch),
        feature_version=feature_version,
    )
    get_run_logger().info("model %s version %s: %s", entry.name, entry.version, entry.metrics["model"])
    return entry


@task
def predict_task(home: str | None, model_version: int | None, device: str) -> tuple[int, Path]:
    """Persist hindcasts and the next-month forecast of a registered model."""
    version, plot = predict_core(Catalog(home), model_version=model_version, device=device)
    get_run_logger().info("enso_predictions version %s; plot %s", version, plot)
    return version, plot


@flow(name="ingest-sst")
def ingest_sst(paths: list[Path], home: str | None = None) -> IngestReport:
    """Ingest COBE-SST GRIB files (or folders of them) into the array `sst`."""
    return finish(ingest_source(source="sst", paths=paths, home=home))


@flow(name="build-enso-features")
def build_enso_features(home: str | None = None, train_end: Month = "1990-01", coarsen: Coarsen = 1) -> FeatureBuild:
    """Build (or reuse) the ENSO features of the latest inputs."""
    return build_features_task(home, train_end, coarsen)


@flow(name="train-enso")
def train_enso(home: str | None = None, settings: EnsoSettings = EnsoSettings(),
               feature_version: int | None = None) -> ModelVersion:
    """Train the ConvLSTM ENSO forecaster on a feature version (default latest)."""
    return train_task(home, settings, feature_version)


@flow(name="predict-enso")
def predict_enso(home: str | None = None, model_version: int | None = None, device: str = "auto") -> tuple[int, Path]:
    """Persist predictions of a registered ENSO model (default latest)."""
    return predict_task(home, model_version, device)


@flow(name="enso-pipeline")
def enso_pipeline(sst_paths: list[Path], oni_path: Path = SAMPLE, home: str | None = None,
                  settings: EnsoSettings = EnsoSettings()) -> dict[str, object]:
    """SST + Niño 3.4 ingest -> features -> ConvLSTM -> predictions, each step a Prefect task."""
    sst = finish(ingest_source(source="sst", paths=sst_paths, home=home))
    nino = finish(ingest_source(source="oni", paths=[oni_path], home=home))
    features = build_features_task(home, settings.train_end, settings.coarsen)
    model = train_task(home, settings, features.snapshot)
    predictions, plot = predict_task(home, model.version, settings.device)
    return {"sst_version": sst.version, "nino34_version": nino.version, "feature_version": features.version,
            "model_version": model.version, "metrics": model.metrics, "predictions_version": predictions,
            "plot": str(plot)}
