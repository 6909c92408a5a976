"""The Trainer's module file: `run_fn` and `tuner_fn`, the two functions TFX calls.

As in the TFX penguin template, the pipeline names this package's functions
(`run_fn="hyperrec.components.trainer.run_fn"`, `tuner_fn="...trainer.tuner_fn"`), and
run_fn reads as the recipe: data -> model -> fit -> export. One module per job:

- input.py        fn_args' files as datasets: raw tf.Examples through the TFT layer, the
                  catalogue split, sampled negatives, the validation slice's events
                  (`TrainingData`: fn_args is read there and nowhere else);
- build.py        the compiled two-tower model (components/model/: a thin model whose tasks
                  own their losses and metrics), pretrained encoders, the learning rate;
- fit.py          model selection on the validation slice, then the refit on the whole
                  train split;
- callbacks.py    BackupAndRestore, the validation slice's ranking metric, early stopping,
                  TensorBoard, a progress line;
- habits.py       configs and the Tuner's hyperparameters, seeds, the run's records;
- distribution.py the tf.distribute strategy, and where each worker may write;
- export.py       the SavedModel and its warmup requests (signatures.py: the serving
                  module; catalogue_embedding.py: the catalogue it ranks);
- tuning.py       the keras-tuner search (`tuner_fn`).
"""
from __future__ import annotations

from absl import logging
from tfx import v1 as tfx

from hyperrec.components.trainer import distribution, export, fit, habits
from hyperrec.components.trainer.input import TrainingData, fn_args_for
from hyperrec.components.trainer.tuning import tuner_fn

# fn_args_for: FnArgs as TFX's Trainer builds them, for run_fn outside a pipeline.
__all__ = ["run_fn", "tuner_fn", "fn_args_for"]


# TFX's Trainer calls this function.
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains the two-tower model on fn_args' train split and exports it for serving.

    custom_config: {"model", "data", "transform"} config dicts; fn_args.hyperparameters (the
    Tuner's best) override ModelConfig fields. TensorBoard logs, backups and history.json go
    to fn_args.model_run_dir; the SavedModel to fn_args.serving_model_dir (on multi-worker
    runs, the chief's copy). The eval split only provides warmup requests.
    """
    configs = habits.read_configs(fn_args.custom_config, fn_args.hyperparameters)
    # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = distribution.create_strategy(configs.model.strategy, configs.model.tpu)
    logging.info("training with %s", distribution.describe(strategy))
    habits.seed_everything(configs.model)

    data = TrainingData.read(fn_args, *configs, strategy)
    # model + fit: selection on the validation slice, then a fresh model on all train rows.
    selected = fit.select(configs, data, strategy, fn_args.model_run_dir)
    refit = fit.refit_full_train(selected, configs, data, strategy, fn_args.model_run_dir)
    model = (refit or selected).model
    model.exposure_weight.assign(selected.exposure_weight)  # a refit starts from the config's

    export.export_trained_model(model, data, configs.model, fn_args.serving_model_dir, strategy)
    if distribution.is_chief(strategy):
        habits.record_finished_run(fn_args.model_run_dir, configs.model, selected.history,
                                   strategy, refit.history if refit else None)
