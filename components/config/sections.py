"""The sections of a run's configuration: one dataclass per component's knobs, each with its
defaults (nowhere else), nested in `HyperrecConfig`."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional


@dataclasses.dataclass
class DataConfig:
    """What ExampleGen produces from the contract files."""

    image_size: int = 32  # every image is resized to image_size x image_size RGB PNG
    history_length: int = 10  # N: last N engaged item ids before each event
    eval_days: float = 7.0  # the last eval_days of the window are the eval split
    window_spans: int = 8  # K: ExampleGen reads the latest span and the K-1 before it
    span_pattern: str = "span-{SPAN}/*.csv"
    # Interactions later than this ISO-8601 UTC time ("" = the time ExampleGen runs) are
    # quarantined and counted; the time split uses the rows that remain.
    timestamp_horizon: str = ""
    min_eval_examples: int = 50  # a smaller eval split stops the run with the reason
    max_user_share: float = 0.2  # a user above this share of a split is reported
    cap_user_share: bool = False  # and, when True, capped to the share (latest rows kept)
    # A span whose drift distance to the previous span exceeds this is broken, not shifted
    # (every row one category: ~0.8; the sample data's real shift: ~0.1); the run stops.
    max_span_drift: float = 0.5
    # Hash buckets each split is sorted in before it is written (example_gen/executor.py:
    # in_stable_order). 1: one file per split in the same order on every run; more: a
    # large split sorted on several workers of a distributed runner.
    order_buckets: int = 1


@dataclasses.dataclass
class TransformConfig:
    """Vocabularies and text processing of preprocessing_fn."""

    text_max_tokens: int = 24
    text_vocab_size: int = 5000
    id_vocab_size: int = 20000  # top-k ids kept per id vocabulary
    id_min_frequency: int = 1
    num_oov_buckets: int = 1
    text_min_frequency: int = 1  # a token enters the text vocabulary from this count


PRETRAINED_MODES = ("fine_tune", "frozen")
HISTORY_POOLINGS = ("attention", "mean", "recency")  # model/towers.py: QueryTower
RECENT_POPULARITY_EVENTS = ("engaged", "shown")  # what model/popularity_prior.py counts
SERVED_SCORES = ("retrieval", "affinity")  # what `recommend` ranks by (trainer/signatures.py)


class UnknownPretrainedMode(ValueError):
    """model.pretrained.mode is not one of PRETRAINED_MODES."""


@dataclasses.dataclass
class PretrainedConfig:
    """Pretrained image / text encoders the Trainer loads into the item tower
    (components/pretraining/; `hyperrec pretrain` writes them)."""

    # A directory written by `hyperrec pretrain`: local path, gs:// (tf.io.gfile), or an
    # http(s) URL of a .tar.gz / .zip of it (downloaded once into cache_dir). "" = none.
    image: str = ""
    text: str = ""
    mode: str = "fine_tune"  # fine_tune | frozen (the encoders' variables do not train)
    lr_multiplier: float = 0.1  # fine_tune: encoder learning rate / model learning rate
    cache_dir: str = ""  # where URLs are downloaded; "" = Keras' cache (~/.keras)

    def __setattr__(self, name: str, value: Any) -> None:
        # Checked on every assignment: construction, from_dict and `--set` overrides.
        if name == "mode" and value not in PRETRAINED_MODES:
            raise UnknownPretrainedMode(
                f"unknown model.pretrained.mode {value!r}; choose from {PRETRAINED_MODES}")
        if name == "lr_multiplier" and not float(value) > 0:
            raise ValueError(f"model.pretrained.lr_multiplier must be > 0, got {value!r} "
                             "(mode=frozen keeps the encoders fixed)")
        super().__setattr__(name, value)


@dataclasses.dataclass
class ModelConfig:
    """Sizes, objectives and optimisation of the two-tower model."""

    embedding_dim: int = 32
    id_embedding_dim: int = 16
    cnn_filters: tuple = (16, 32)  # one learner block per entry after the stem
    text_embedding_dim: int = 32
    text_heads: int = 2
    text_layers: int = 1
    text_ff_dim: int = 64
    dropout: float = 0.1
    temperature: float = 0.1  # in-batch softmax logits are cosine / temperature
    retrieval_weight: float = 1.0
    ranking_weight: float = 1.0
    # The engaged-vs-shown loss on the retrieval cosine (model/affinity.py): what makes the
    # served score depend on the user; 0 = off.
    affinity_weight: float = 0.0
    # What `recommend` ranks by (trainer/signatures.py):
    #   "retrieval": cosine + temperature * (retrieval bias + recent popularity + freshness),
    #     the retrieval softmax's logit;
    #   "affinity": temperature * (the affinity task's logit + exposure_weight *
    #     log(1 + the item's recent count)), i.e. P(engaged | shown) x P(shown)^w: the
    #     personal factor from the affinity task, the demand factor from what the shop showed
    #     lately (with recent_popularity_events="shown"). Needs affinity_weight > 0.
    served_score: str = "retrieval"
    # The exposure term's weight: chosen on the validation slice from exposure_weights (the
    # ranking the validation metric measures) when there is one, else exposure_weight.
    exposure_weight: float = 1.0
    exposure_weights: tuple = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    # The item's retrieval bias reads its id too (False: content only, so popularity enters
    # the score through the recent-popularity and freshness terms; model/towers.py).
    item_bias_reads_id: bool = True
    learning_rate: float = 3e-3
    batch_size: int = 128
    epochs: int = 4
    train_steps: Optional[int] = None  # None: epochs over the train split
    eval_steps: Optional[int] = None
    recommend_k: int = 10
    use_item_id: bool = True  # the item tower adds an item-id embedding to content
    seed: int = 42

    # ---- objectives, cold start, distribution, training habits, tuning --------------------
    use_content: bool = True  # image/text/category/price in the item tower (False: id-only)
    id_dropout: float = 0.0  # share of training rows whose user/item id is masked (cold start)
    new_item_days: float = 14.0  # items younger at the event train id-less (cold start)
    retrieval_negatives: str = "positives"  # positives | batch (impressions' items join)
    # Catalogue items drawn uniformly per batch that join the in-batch candidates as
    # negatives (mixed negative sampling; model/retrieval.py); 0 = in-batch only.
    sampled_negatives: int = 0
    # How the query tower pools the recent items: attention | mean | recency (model/towers.py).
    history_pooling: str = "attention"
    use_time_of_day: bool = True  # the request's hour and day of week in the query context
    fusion_units: int = 0  # hidden units of the towers' fusion MLPs; 0 = 2 * embedding_dim
    # Towers = fusion_weight * unit fusion-MLP output + unit shared content vector (history
    # content for queries): a small weight keeps "like your recent items" dominant.
    fusion_weight: float = 0.3
    log_q_weight: float = 1.0  # sampling-bias correction in training: 1 = full, 0 = none
    # Served score = cosine + temperature * (bias + serving_popularity_weight * log Q(item)):
    # puts back popularity that the logQ correction took out of the logits (0 = off).
    serving_popularity_weight: float = 0.0
    # Learned recent-popularity term (model/popularity_prior.py): engagements with the item
    # in the recent_popularity_days before the query's day, bucketed at these counts
    # (() = no term).
    recent_popularity_days: int = 7
    recent_popularity_counts: tuple = (1, 2, 3, 5, 9, 17, 33, 65, 129)
    # What the recent-popularity term counts: "engaged" events or every "shown" row (the
    # item's recent exposure).
    recent_popularity_events: str = "engaged"
    # Age buckets (days) of the learned freshness term of the retrieval score
    # (model/freshness.py); () = no freshness term.
    freshness_days: tuple = (1, 2, 3, 5, 7, 10, 14, 21, 28, 42, 60, 90)
    ranking_hidden_units: tuple = ()  # ranking MLP; () = one layer of 2 * embedding_dim
    ranking_uses_retrieval: bool = True  # ranking head also reads retrieval cosine and bias
    # tf.distribute: auto | one_device | mirrored | multi_worker_mirrored | tpu. The batch
    # size is GLOBAL (split over replicas), so results do not depend on the replica count.
    strategy: str = "auto"
    tpu: str = ""  # TPUClusterResolver address for strategy "tpu" ("" = TPU_NAME / local)
    lr_schedule: str = "warmup_cosine"  # constant | warmup_cosine
    warmup_fraction: float = 0.1  # of all train steps, linear from 0 to learning_rate
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    # Model selection on the last validation_days of the TRAIN split (never the eval split):
    # 0 = no validation slice (train on all of it, no early stopping).
    validation_days: float = 7.0
    validation_metric: str = "recall@10"  # ranking metric logged as val_<metric>; "" = none
    early_stopping_monitor: str = "val_recall@10"  # or val_loss, val_auc (losses: min mode)
    early_stopping_patience: int = 2  # epochs without improvement; 0 = no early stopping
    refit_full_train: bool = True  # after selection, retrain on all train rows, best #epochs
    backup_dir: str = ""  # BackupAndRestore state; "" = <model_run_dir>/backup
    # tf.config.experimental.enable_op_determinism: same seed, same model. On CPU its cost
    # is below the noise (tiny Trainer, 2 epochs, 5 runs each: median 30.8 s with, 33.6 without).
    deterministic: bool = True
    tune: bool = False  # run the Tuner before the Trainer (components/trainer/tuning.py)
    tune_max_trials: int = 3  # keras-tuner RandomSearch trials
    tune_steps: int = 40  # train steps per trial (one epoch)
    pretrained: PretrainedConfig = dataclasses.field(default_factory=PretrainedConfig)

    def __setattr__(self, name: str, value: Any) -> None:
        # Checked on every assignment, as PretrainedConfig's: a bad value fails at load.
        if name == "history_pooling" and value not in HISTORY_POOLINGS:
            raise ValueError(f"unknown model.history_pooling {value!r}; "
                             f"choose from {HISTORY_POOLINGS}")
        if name == "served_score" and value not in SERVED_SCORES:
            raise ValueError(f"unknown model.served_score {value!r}; choose from {SERVED_SCORES}")
        if name == "recent_popularity_events" and value not in RECENT_POPULARITY_EVENTS:
            raise ValueError(f"unknown model.recent_popularity_events {value!r}; "
                             f"choose from {RECENT_POPULARITY_EVENTS}")
        if name == "sampled_negatives" and not int(value) >= 0:
            raise ValueError(f"model.sampled_negatives must be >= 0, got {value!r}")
        super().__setattr__(name, value)


@dataclasses.dataclass
class EvalConfig:
    """The Evaluator's blessing gates."""

    min_auc: float = 0.6  # value threshold on the ranking AUC of the eval split
    max_auc_drop: float = 0.01  # change threshold against the last blessed model
    # Ranking gate (components/evaluation): full catalogue, the user's whole train history
    # excluded. The candidate must beat every `must_beat` baseline on the metric and not be
    # significantly worse (paired bootstrap interval) than the last blessed model.
    ranking_gate_metric: str = "recall@10"
    # Every baseline (components/evaluation/baselines.py): a model that loses to any of
    # them is not worth serving.
    must_beat: tuple = ("most_popular", "recent_popular", "itemknn", "ease")
    # The experiment's name when it is a smoke configuration: must_beat=() there, and the
    # gate's reason says the baselines were reported, not required.
    smoke_configuration: str = ""
    max_regression: float = 0.0  # tolerated drop below the last blessed model
    # Also require a strictly higher value than the last blessed model on the same eval
    # period (the retraining loop: a new model must help what users see, not only not hurt).
    must_improve_on_blessed: bool = False
    ranking_ks: tuple = (10, 50)
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    new_user_days: float = 7.0  # first train event this close to the cutoff: a new user
    recent_popular_days: float = 7.0  # window of the recent most-popular baseline
    ranking_validation_days: float = 7.0  # end of train that tunes the baselines
    ease_lambdas: tuple = (1, 3, 10, 30, 100, 300, 1000, 3000)  # widened at an edge
    knn_neighbours: tuple = (5, 10, 20, 50, 100, 200)
    # Sampled evaluation for large catalogues (components/evaluation/README.md, "At 10^6
    # items"): a seeded sample of at most this many eval users ranks the catalogue, and at
    # most ranking_validation_users validation users tune the baselines; 0 = every user.
    max_eval_users: int = 0
    ranking_validation_users: int = 0


@dataclasses.dataclass
class InfraValidationConfig:
    """The InfraValidator's checks (components/infra_validation): the candidate in a fresh
    serving process before the push."""

    memory_limit_mb: float = 4096.0  # peak RSS above this refuses the candidate
    requests: int = 200  # per API (REST, gRPC), for p50 / p99
    load_timeout_s: float = 600.0
    request_timeout_s: float = 60.0
    rtol: float = 1e-4  # served answers against in-process calls
    atol: float = 1e-5


@dataclasses.dataclass
class CanaryConfig:
    """`hyperrec monitor --feedback`: canary against stable on the feedback span
    (pipeline/loop/canary.py). A request is engaged when its user clicked, added to
    cart or bought one of its recommended items within `horizon_hours` after it. Roll back
    when the canary's engaged rate is significantly below stable's (the `confidence` interval
    of canary - stable lies below 0); promote when it is not worse by more than `margin`
    (the interval's low end is above -margin); otherwise, or with fewer than
    `min_requests_per_label` requests on either label, keep collecting."""

    stable_label: str = "stable"
    canary_label: str = "canary"
    horizon_hours: float = 24.0
    min_requests_per_label: int = 200
    margin: float = 0.01  # absolute engaged-rate difference tolerated for promotion
    confidence: float = 0.95


@dataclasses.dataclass
class MonitoringConfig:
    """`hyperrec monitor --trigger`: when a window starts a retraining run, and where. The
    thresholds are the schema's skew/drift comparators; this says which of them count."""

    trigger_on: str = "drift_or_skew"  # drift | skew | drift_or_skew
    runner: str = "local"  # local | airflow | kubeflow
    # Airflow: the DAG (runners/airflow_dag.py; "" = hyperrec-<experiment>), through the REST
    # API at airflow_url (user/password from $AIRFLOW_USERNAME / $AIRFLOW_PASSWORD) or, when
    # it is "", the `airflow` command of this environment.
    airflow_dag_id: str = ""
    airflow_url: str = ""
    # Kubeflow: the KFP API endpoint ("" = write the spec and its submit.sh under
    # WORKDIR/kubeflow/<run> instead), the pipeline image every task runs in, and the
    # cluster's roots (gs://... or s3://...; never looked for on this disk).
    kubeflow_host: str = ""
    kubeflow_experiment: str = "hyperrec"
    kubeflow_image: str = ""
    kubeflow_pipeline_root: str = ""
    kubeflow_serving_dir: str = ""
    canary: CanaryConfig = dataclasses.field(default_factory=CanaryConfig)


@dataclasses.dataclass
class HyperrecConfig:
    """A complete run: which data, which sizes, where artifacts go."""

    name: str = "default"
    data_scale: str = "default"  # the sample-data scale `make demo` generates
    schema_file: str = "schemas/schema.pbtxt"  # curated schema; relative to the project root
    seed: int = 42
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    transform: TransformConfig = dataclasses.field(default_factory=TransformConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    infra_validation: InfraValidationConfig = dataclasses.field(
        default_factory=InfraValidationConfig)
    monitoring: MonitoringConfig = dataclasses.field(default_factory=MonitoringConfig)
    # Beam DirectRunner: in_memory | multi_threading | multi_processing. Ingestion (ExampleGen,
    # StatisticsGen) is where data volume lives, so it gets worker processes; the other
    # components are dominated by TensorFlow, which uses the cores itself.
    direct_running_mode: str = "in_memory"
    ingest_running_mode: str = "multi_processing"
    direct_num_workers: int = 0  # Beam DirectRunner workers; 0 = one per core
    # Airflow schedule of the pipeline's DAG (runners/airflow.py): cron or a preset such as
    # @daily; "" = runs only when triggered (by hand or by the drift check).
    schedule: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)
