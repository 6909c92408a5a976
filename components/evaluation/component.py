"""RankingEvaluator: the full-catalogue ranking gate between the Trainer and the Pusher.

Inputs: ExampleGen's examples (train / eval / catalog), the candidate model, optionally the
latest blessed model (the pipeline's resolver) and TFMA Evaluator's blessing. Outputs:
- `evaluation` (RankingEvaluation): metrics.json (every slice, method, interval and paired
  difference, the baselines' chosen hyper-parameters, the decision) and metrics.txt (tables);
- `blessing` (ModelBlessing): blessed only when the ranking gate (gate.py) passes AND TFMA
  blessed. The Pusher reads this one blessing, so it pushes only doubly blessed models.

Why the combined blessing is emitted here rather than by a two-blessing Pusher: TFX's
Pusher, its `CheckBlessing` and the LatestBlessedModelStrategy resolver all speak one
ModelBlessing with `blessed` and `current_model_id` properties; producing that one artifact
keeps the stock Pusher contract and lets the resolver find the last model that passed BOTH
gates (the pipeline points it at this component's output). The decision's reason is printed,
logged, written to metrics.json and stored on both artifacts as the `reason` property (MLMD).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.components.util import model_utils
from tfx.utils import io_utils, path_utils

from hyperrec.components import config as config_lib
from hyperrec.components.evaluation import baselines, gate, protocol, run
from hyperrec.data import contract

EXAMPLES = "examples"
MODEL = "model"
BASELINE_MODEL = "baseline_model"
TFMA_BLESSING = "tfma_blessing"
EVALUATION = "evaluation"
BLESSING = "blessing"
CONFIG = "config"
METRICS_JSON = "metrics.json"
METRICS_TEXT = "metrics.txt"
REASON = "reason"


class RankingEvaluation(types.Artifact):
    """The RankingEvaluator's metrics (metrics.json, metrics.txt)."""

    TYPE_NAME = "hyperrec.RankingEvaluation"


def executor_config(eval_config: Dict[str, Any], history_length: int,
                    code_fingerprint: str = "", data_root: str = "") -> str:
    """The component's `config` property: the EvalConfig section as a dict, the history
    length the model's queries use, the code digest (so a code change is not cached) and
    the data root, where synthetic data keeps the generator's ground truth (taste match)."""
    return json.dumps({"eval": eval_config, "history_length": history_length,
                       "code_fingerprint": code_fingerprint, "data_root": data_root},
                      sort_keys=True)


def read_ground_truth(data_root: str) -> Optional[Dict[str, Any]]:
    """The synthetic generator's ground_truth.json under `data_root`; None for other data
    (imported logs have no hidden tastes) or no data root."""
    path = os.path.join(data_root, contract.GROUND_TRUTH_FILE) if data_root else ""
    if not path or not fileio.exists(path):
        return None
    return json.loads(io_utils.read_string_file(path))


class RankingEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {CONFIG: ExecutionParameter(type=str)}
    INPUTS = {
        EXAMPLES: ChannelParameter(type=standard_artifacts.Examples),
        MODEL: ChannelParameter(type=standard_artifacts.Model),
        BASELINE_MODEL: ChannelParameter(type=standard_artifacts.Model, optional=True),
        TFMA_BLESSING: ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
    }
    OUTPUTS = {
        EVALUATION: ChannelParameter(type=RankingEvaluation),
        BLESSING: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


def settings(eval_config: config_lib.EvalConfig
             ) -> Tuple[gate.Gate, baselines.BaselineConfig]:
    """The ranking gate and the baselines' configuration of an EvalConfig; the baselines
    choose their hyper-parameters on the gate's metric."""
    ranking_gate = gate.Gate(metric=eval_config.ranking_gate_metric,
                             must_beat=tuple(eval_config.must_beat),
                             max_regression=float(eval_config.max_regression),
                             must_improve_on_blessed=bool(eval_config.must_improve_on_blessed),
                             smoke_configuration=eval_config.smoke_configuration)
    baseline_config = baselines.BaselineConfig(
        recent_days=float(eval_config.recent_popular_days),
        validation_days=float(eval_config.ranking_validation_days),
        ease_lambdas=tuple(float(v) for v in eval_config.ease_lambdas),
        knn_neighbours=tuple(int(v) for v in eval_config.knn_neighbours),
        selection_metric=ranking_gate.metric,
        validation_users=int(eval_config.ranking_validation_users) or None,
        sample_seed=int(eval_config.bootstrap_seed))
    return ranking_gate, baseline_config


def _model_dir(artifacts: List[types.Artifact]) -> str:
    return path_utils.serving_model_path(artifact_utils.get_single_uri(artifacts))


class Executor(base_executor.BaseExecutor):
    """Ranks, scores, decides; see the module docstring."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        config = json.loads(exec_properties[CONFIG])
        eval_config = config_lib.from_dict(config_lib.EvalConfig, config["eval"])
        ranking_gate, baseline_config = settings(eval_config)
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES])
        task = protocol.load_task(examples.uri, history_length=config["history_length"],
                                  new_user_days=float(eval_config.new_user_days))
        model_dirs = {gate.CANDIDATE: _model_dir(input_dict[MODEL])}
        baseline = input_dict.get(BASELINE_MODEL) or []
        if baseline:
            model_dirs[gate.BLESSED] = _model_dir(baseline)
        result = run.evaluate(
            task, model_dirs, history_length=config["history_length"],
            ks=tuple(eval_config.ranking_ks), baseline_config=baseline_config,
            n_resamples=int(eval_config.bootstrap_resamples),
            seed=int(eval_config.bootstrap_seed),
            truth=read_ground_truth(config.get("data_root", "")),
            max_users=int(eval_config.max_eval_users) or None)
        tfma = input_dict.get(TFMA_BLESSING) or []
        tfma_blessed = (model_utils.is_model_blessed(artifact_utils.get_single_instance(tfma))
                        if tfma else None)
        blessed, reason = gate.decide(result, ranking_gate, tfma_blessed)
        result["decision"] = {"blessed": blessed, "reason": reason,
                              "gate": {"metric": ranking_gate.metric,
                                       "must_beat": list(ranking_gate.must_beat),
                                       "max_regression": ranking_gate.max_regression,
                                       "must_improve_on_blessed":
                                           ranking_gate.must_improve_on_blessed},
                              "tfma_blessed": tfma_blessed}
        verdict = "BLESSED" if blessed else "NOT BLESSED"
        message = f"RankingEvaluator: {verdict}: {reason}"
        print(message, flush=True)
        logging.info(message)

        evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION])
        io_utils.write_string_file(os.path.join(evaluation.uri, METRICS_JSON),
                                   json.dumps(result, indent=1, sort_keys=True))
        tables = [message] + [gate.table(result, name, reference=baselines.MOST_POPULAR)
                              for name in protocol.SLICES] + [gate.personalisation_table(result)]
        io_utils.write_string_file(os.path.join(evaluation.uri, METRICS_TEXT),
                                   "\n\n".join(tables) + "\n")
        overall = result["slices"]["overall"].get("metrics", {})
        for artifact in (evaluation, artifact_utils.get_single_instance(output_dict[BLESSING])):
            artifact.set_int_custom_property("blessed", int(blessed))
            artifact.set_string_custom_property(REASON, reason)
        for method, values in overall.items():
            evaluation.set_float_custom_property(f"{method}:{ranking_gate.metric}",
                                                 values[ranking_gate.metric]["value"])
        self._write_blessing(output_dict, input_dict, blessed)

    @staticmethod
    def _write_blessing(output_dict, input_dict, blessed: bool) -> None:
        """The ModelBlessing as TFX's Evaluator writes it (the Pusher and the resolver read
        `blessed` and `current_model_id`)."""
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING])
        model = artifact_utils.get_single_instance(input_dict[MODEL])
        blessing.set_string_custom_property(
            evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
        blessing.set_int_custom_property(
            evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
        baseline = input_dict.get(BASELINE_MODEL) or []
        if baseline:
            blessing.set_string_custom_property(
                evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline[0].uri)
            blessing.set_int_custom_property(
                evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline[0].id)
        name = (evaluator_constants.BLESSED_FILE_NAME if blessed
                else evaluator_constants.NOT_BLESSED_FILE_NAME)
        io_utils.write_string_file(os.path.join(blessing.uri, name), "")


class RankingEvaluator(base_component.BaseComponent):
    """See the module docstring."""

    SPEC_CLASS = RankingEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel, config: str,
                 baseline_model: types.BaseChannel = None,
                 tfma_blessing: types.BaseChannel = None):
        super().__init__(spec=RankingEvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model,
            tfma_blessing=tfma_blessing, config=config,
            evaluation=types.Channel(type=RankingEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
