"""The named experiments (`--experiment tiny|small|default|online_retail`): each a complete
`HyperrecConfig`, and `load`, which applies the command line's overrides to one."""
from __future__ import annotations

import dataclasses
from typing import Iterable

from hyperrec.components.config.overrides import with_overrides
from hyperrec.components.config.sections import (DataConfig, EvalConfig, HyperrecConfig,
                                                 InfraValidationConfig, ModelConfig,
                                                 TransformConfig)


def _tiny() -> HyperrecConfig:
    return HyperrecConfig(
        name="tiny",
        data_scale="tiny",
        data=DataConfig(image_size=24, history_length=5, eval_days=7.0),
        transform=TransformConfig(text_max_tokens=16, text_vocab_size=1000),
        model=ModelConfig(embedding_dim=16, id_embedding_dim=8, cnn_filters=(8, 16),
                          text_embedding_dim=16, text_ff_dim=32, batch_size=64, epochs=3),
        # A smoke configuration: tiny's 3-epoch model is only at most-popular's level, and
        # its tests need a pushed model, so its gate reports the baselines without requiring
        # them (the reason says so; tests that need the gate set must_beat explicitly).
        eval=EvalConfig(min_auc=0.55, must_beat=(), smoke_configuration="tiny"),
        # Every test pipeline run validates its candidate in a server: 20 requests per API
        # still give p50/p99 and the agreement checks.
        infra_validation=InfraValidationConfig(requests=20),
        # Worker start-up costs more than it saves on a few thousand rows.
        ingest_running_mode="in_memory",
    )


def _small() -> HyperrecConfig:
    return HyperrecConfig(name="small", data_scale="small")


def _online_retail() -> HyperrecConfig:
    """The real UCI Online Retail import (`hyperrec import online-retail`): 28-day spans,
    purchases vs popularity-sampled negatives, product text and no images."""
    tiny = _tiny()
    return dataclasses.replace(
        tiny, name="online_retail", data_scale="",
        schema_file="schemas/online_retail.pbtxt",
        # 30 history items, not 10 (EASE reads whole histories): 1.14-1.18 x EASE's
        # recall@10 against 1.10 x with 10 (components/evaluation/README.md); on the
        # validation slice 0.082 after two epochs against 0.071.
        data=DataConfig(image_size=16, history_length=30, eval_days=28.0, window_spans=14),
        transform=TransformConfig(text_max_tokens=12, text_vocab_size=3000),
        # Ablations on the full import (components/evaluation/README.md): 512-row batches
        # (about 270 positives, the in-batch softmax's candidates) and 64-d embeddings
        # reach EASE's recall@10 in 4 epochs, with val_recall@10 still rising: early
        # stopping picks the length, up to 8.
        model=dataclasses.replace(tiny.model, epochs=8, batch_size=512, embedding_dim=64,
                                  id_embedding_dim=64),
        # Bought vs popularity-sampled items is a hard task for a small sample; the gate
        # still rejects a model no better than chance. Real data: every baseline must be
        # beaten (EvalConfig's must_beat), not tiny's smoke gate.
        eval=EvalConfig(min_auc=0.52))


EXPERIMENTS = {"tiny": _tiny, "small": _small, "default": HyperrecConfig,
               "online_retail": _online_retail}


def load(experiment: str = "default", overrides: Iterable[str] = ()) -> HyperrecConfig:
    """The named experiment with command-line overrides applied."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose from {sorted(EXPERIMENTS)}")
    return with_overrides(EXPERIMENTS[experiment](), overrides)
