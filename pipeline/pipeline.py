"""The one hyperrec pipeline definition; every runner (local, Kubeflow, Airflow) builds this.

ExampleGen -> StatisticsGen -> ImportSchemaGen (curated schemas/schema.pbtxt) ->
ExampleValidator -> AnomaliesGate (a bad span ends the run) -> DistributionValidator
(the new span against the previous run's) -> SpanDriftGate (a broken span ends the run) ->
Transform -> [Tuner, when
ModelConfig.tune: its best hyperparameters go to the Trainer] -> Trainer -> Evaluator (gated against the latest blessed
model) -> RankingEvaluator (full-catalogue top-k against baselines and the latest blessed
model; emits the blessing of both gates) -> InfraValidator (the candidate served by a fresh
`python -m hyperrec.serving` process: warmup, every signature over REST and gRPC against
in-process calls, load time, latency, peak RSS under a memory limit) -> Pusher (a new
integer version under the serving base path; only a model with the evaluators' blessing AND
the InfraBlessing).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import List, Optional

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.components import DistributionValidator, FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2, transform_pb2

from hyperrec.schemas import features
from hyperrec.components.example_gen import executor as example_gen_executor
from hyperrec.components import pusher as pusher_executor
from hyperrec.components.validation_gate import AnomaliesGate
from hyperrec.components import span_drift
from hyperrec.components.evaluation import component as ranking_evaluator_lib
from hyperrec.components.infra_validation import component as infra_validation
from hyperrec.components.config import HyperrecConfig, project_root
from hyperrec.pipeline.fingerprint import code_fingerprint
from ml_metadata.proto import metadata_store_pb2

MODEL_NAME = "hyperrec"
TRANSFORM_MODULE = "hyperrec.components.transform"
TRAINER_MODULE = "hyperrec.components.trainer"
TUNER_MODULE = TRAINER_MODULE  # one module file for run_fn and tuner_fn (TFX templates)
PREPROCESSING_FN = f"{TRANSFORM_MODULE}.preprocessing_fn"
RUN_FN = f"{TRAINER_MODULE}.run_fn"
TUNER_FN = f"{TUNER_MODULE}.tuner_fn"
RANKING_EVALUATOR_ID = "RankingEvaluator"
INFRA_VALIDATOR_ID = "InfraValidator"


def example_gen_component(config: HyperrecConfig, data_root: str) -> FileBasedExampleGen:
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name="interactions", pattern=config.data.span_pattern)])
    # The executor routes examples by time, not by hash; the split names are what matters.
    output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1)
        for name in (features.TRAIN_SPLIT, features.EVAL_SPLIT, features.CATALOG_SPLIT)]))
    return FileBasedExampleGen(
        input_base=data_root,
        input_config=input_config,
        output_config=output_config,
        custom_config=example_gen_executor.encode_custom_config(
            {**dataclasses.asdict(config.data),
             "code_fingerprint": code_fingerprint(example_gen_executor.__name__)}),
        custom_executor_spec=executor_spec.BeamExecutorSpec(example_gen_executor.Executor),
    )


# Per-user ranking over the eval impressions: NDCG of the examples of one user (the query)
# ordered by the ranking score, gain = the label.
NDCG_TOP_K = (5, 10)


def eval_config(config: HyperrecConfig) -> tfma.EvalConfig:
    """AUC of the ranking score, sliced, with a value gate and a no-regression gate; per-user
    NDCG over impressions (query key = user id); slices: overall, cold-start items, category,
    new vs returning users (the model's `transformed_features` signature, which TFMA calls
    by that name: new = nothing engaged before the event)."""
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.eval.min_auc}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -config.eval.max_auc_drop}))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=features.LABEL,
                                    prediction_key="score")],
        slicing_specs=[tfma.SlicingSpec(),
                       tfma.SlicingSpec(feature_keys=[features.COLD_START]),
                       tfma.SlicingSpec(feature_keys=[features.CATEGORY]),
                       tfma.SlicingSpec(feature_keys=[features.USER_SEGMENT])],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            # Gate on the overall slice only: per-category slices of a small eval window are
            # too noisy to block a push; they are reported, not gated.
            tfma.MetricConfig(class_name="AUC", per_slice_thresholds=[
                tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()],
                                             threshold=auc_threshold)]),
            tfma.MetricConfig(class_name="BinaryAccuracy"),
            tfma.MetricConfig(class_name="MeanPrediction"),
            tfma.MetricConfig(class_name="MeanLabel"),
        ]), tfma.MetricsSpec(query_key=features.USER_ID, metrics=[
            tfma.MetricConfig(class_name="NDCG", config=json.dumps(
                {"gain_key": features.LABEL, "top_k_list": list(NDCG_TOP_K)})),
        ])],
    )


def tuner_component(config: HyperrecConfig, example_gen, transform, schema_gen,
                    custom_config: dict) -> tfx.components.Tuner:
    """keras-tuner search (components/trainer/tuning.py) on the Trainer's inputs and
    custom_config, with ModelConfig.tune_max_trials trials of ModelConfig.tune_steps steps
    each."""
    return tfx.components.Tuner(
        tuner_fn=TUNER_FN,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT],
                                       num_steps=config.model.tune_steps),
        eval_args=tfx.proto.EvalArgs(splits=[features.EVAL_SPLIT],
                                     num_steps=config.model.eval_steps or 0),
        custom_config=custom_config,
    )


def create_pipeline(config: HyperrecConfig, *, data_root: str, pipeline_root: str,
                    serving_dir: str, metadata_path: Optional[str] = None,
                    beam_pipeline_args: Optional[List[str]] = None,
                    ingest_beam_pipeline_args: Optional[List[str]] = None,
                    enable_cache: bool = True, schema_path: Optional[str] = None,
                    metadata_connection_config: Optional[
                        metadata_store_pb2.ConnectionConfig] = None,
                    builtin_resolvers_only: bool = False) -> tfx.dsl.Pipeline:
    """Builds the pipeline; runners only choose orchestration, paths and Beam arguments.

    `beam_pipeline_args` go to every Beam-powered component; `ingest_beam_pipeline_args`, when
    given, replace them for ExampleGen and StatisticsGen, where the data volume is.
    `schema_path` is where the curated schema is for the orchestrator (the Kubeflow runner
    names its path inside the image); default: this checkout's. `metadata_connection_config`
    (SQLite or MySQL) wins over `metadata_path`. `builtin_resolvers_only`: resolvers use
    TFX's own strategy classes, the only ones the Kubeflow V2 compiler accepts.
    """
    example_gen = example_gen_component(config, data_root)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], exclude_splits=[features.CATALOG_SPLIT])
    if ingest_beam_pipeline_args:
        for ingest in (example_gen, statistics_gen):
            ingest.with_beam_pipeline_args(ingest_beam_pipeline_args)
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=schema_path or os.path.join(project_root(), config.schema_file))
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"],
        exclude_splits=[features.CATALOG_SPLIT])
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    # The new span against the previous run's (resolved before this run's StatisticsGen):
    # drift is reported, a broken span stops the run before Transform. Only StatisticsGen's
    # statistics: Transform's pre/post-transform statistics are ExampleStatistics too.
    previous_statistics = tfx.dsl.Resolver(
        strategy_class=(tfx.dsl.experimental.LatestArtifactStrategy if builtin_resolvers_only
                        else span_drift.PreviousStatisticsStrategy),
        statistics=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ExampleStatistics,
                                   producer_component_id=statistics_gen.id,
                                   output_key="statistics"),
    ).with_id("previous_statistics_resolver")
    statistics_gen.add_upstream_node(previous_statistics)
    distribution_validator = DistributionValidator(
        statistics=statistics_gen.outputs["statistics"],
        baseline_statistics=previous_statistics.outputs["statistics"],
        config=span_drift.validator_config(span_drift.load_schema(
            os.path.join(project_root(), config.schema_file))),
        include_split_pairs=[(span_drift.SPLIT, span_drift.SPLIT)])
    span_drift_gate = span_drift.SpanDriftGate(
        anomalies=distribution_validator.outputs["anomalies"],
        max_span_drift=config.data.max_span_drift)
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        # Vocabularies and scales come from training data only; the model applies the
        # transform graph itself (raw features in, at training and at serving).
        splits_config=transform_pb2.SplitsConfig(analyze=[features.TRAIN_SPLIT]),
        materialize=False,
        custom_config={**dataclasses.asdict(config.transform),
                       "data": dataclasses.asdict(config.data),
                       "code_fingerprint": code_fingerprint(TRANSFORM_MODULE)},
    )
    transform.add_upstream_node(anomalies_gate)  # a bad span stops here: no training
    transform.add_upstream_node(span_drift_gate)
    trainer_custom_config = {"model": dataclasses.asdict(config.model),
                             "data": dataclasses.asdict(config.data),
                             "transform": dataclasses.asdict(config.transform),
                             "code_fingerprint": code_fingerprint(TRAINER_MODULE)}
    tuner = tuner_component(
        config, example_gen, transform, schema_gen,
        {**trainer_custom_config, "code_fingerprint": code_fingerprint(TUNER_MODULE)}
    ) if config.model.tune else None
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        # The Tuner's best hyperparameters override ModelConfig fields in run_fn.
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
        train_args=tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT],
                                       num_steps=config.model.train_steps or 0),
        eval_args=tfx.proto.EvalArgs(splits=[features.EVAL_SPLIT],
                                     num_steps=config.model.eval_steps or 0),
        custom_config=trainer_custom_config,
    )
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        # Only the combined blessing counts: TFMA's alone may bless a model the ranking
        # gate refused, which was never pushed.
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                       producer_component_id=RANKING_EVALUATOR_ID,
                                       output_key=ranking_evaluator_lib.BLESSING),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        example_splits=[features.EVAL_SPLIT],
        eval_config=eval_config(config),
    )
    ranking_evaluator = ranking_evaluator_lib.RankingEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        tfma_blessing=evaluator.outputs["blessing"],
        config=ranking_evaluator_lib.executor_config(
            dataclasses.asdict(config.eval), config.data.history_length,
            code_fingerprint(ranking_evaluator_lib.__name__), data_root),
    ).with_id(RANKING_EVALUATOR_ID)
    infra_validator = infra_validation.InfraValidator(
        model=trainer.outputs["model"],
        model_blessing=ranking_evaluator.outputs[ranking_evaluator_lib.BLESSING],
        config=infra_validation.executor_config(
            code_fingerprint(infra_validation.__name__), model_name=MODEL_NAME,
            **dataclasses.asdict(config.infra_validation)),
    ).with_id(INFRA_VALIDATOR_ID)
    pusher = tfx.components.Pusher(
        custom_executor_spec=executor_spec.ExecutorClassSpec(pusher_executor.Executor),
        model=trainer.outputs["model"],
        model_blessing=ranking_evaluator.outputs[ranking_evaluator_lib.BLESSING],
        infra_blessing=infra_validator.outputs[infra_validation.BLESSING],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)),
    )
    components = [previous_statistics, example_gen, statistics_gen, schema_gen,
                  example_validator, anomalies_gate, distribution_validator, span_drift_gate,
                  transform,
                  trainer, model_resolver, evaluator, ranking_evaluator, infra_validator,
                  pusher]
    if tuner:
        components.insert(components.index(trainer), tuner)
    return tfx.dsl.Pipeline(
        pipeline_name=f"hyperrec-{config.name}",
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config or (
            tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
            if metadata_path else None),
        beam_pipeline_args=beam_pipeline_args or [],
    )
