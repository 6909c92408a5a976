"""Named experiments and command-line overrides of the one config."""
import dataclasses

import pytest

from hyperrec.components import config as config_lib


def test_every_experiment_is_a_complete_config_that_round_trips():
    for name in config_lib.EXPERIMENTS:
        config = config_lib.load(name)
        assert config.name == name
        rebuilt = config_lib.from_dict(config_lib.HyperrecConfig, dataclasses.asdict(config))
        assert rebuilt == config


def test_overrides_set_nested_and_top_level_fields_with_their_types():
    config = config_lib.load("tiny", ["model.epochs=7", "model.learning_rate=0.5",
                                      "model.cnn_filters=4,8,16", "data.eval_days=2.5",
                                      "model.train_steps=100", "ingest_running_mode=x"])
    assert config.model.epochs == 7 and config.model.learning_rate == 0.5
    assert config.model.cnn_filters == (4, 8, 16) and config.data.eval_days == 2.5
    assert config.model.train_steps == 100 and config.ingest_running_mode == "x"
    assert config_lib.load("tiny").model.epochs != 7  # the experiment itself is untouched
    grids = config_lib.load("tiny", ["model.freshness_days=0.5,1,2e1",
                                     "eval.must_beat=most_popular,ease"])
    assert grids.model.freshness_days == (0.5, 1, 20.0)
    assert grids.eval.must_beat == ("most_popular", "ease")


@pytest.mark.parametrize("override, message", [
    ("model.epochz=3", "unknown config field 'epochz'"),
    ("modl.epochs=3", "unknown config section 'modl'"),
    ("model.epochs", "not of the form path=value"),
    ("model.epochs=three", "model.epochs expects an integer, e.g. --set model.epochs=3"),
    ("model.history_pooling=max", "unknown model.history_pooling 'max'; choose from"),
    ("model.sampled_negatives=-4", "model.sampled_negatives must be >= 0"),
])
def test_a_wrong_override_is_an_error_not_a_no_op(override, message):
    with pytest.raises(ValueError, match=message):
        config_lib.load("tiny", [override])


def test_unknown_experiment_names_the_choices():
    with pytest.raises(ValueError, match="choose from"):
        config_lib.load("huge")


def test_every_real_configuration_must_beat_every_baseline_and_tiny_is_a_smoke_gate():
    from hyperrec.components.evaluation import baselines

    for name in ("default", "small", "online_retail"):
        eval_config = config_lib.load(name).eval
        assert eval_config.must_beat == baselines.BASELINES, name
        assert eval_config.smoke_configuration == "", name
    tiny = config_lib.load("tiny").eval
    assert tiny.must_beat == () and tiny.smoke_configuration == "tiny"
