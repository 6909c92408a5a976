"""Names vulture cannot see used: frameworks call or read them (tests/test_dead_code.py).

vulture matches by name, so each line below keeps every attribute or variable of that name
alive; keep the list to names a framework uses, each with the framework that uses it.
This file is never imported; vulture only reads it.
"""
from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# Keras calls these on models and callbacks.
_.test_step
_.on_epoch_begin
_.on_train_batch_end
_.trainable  # read by Keras when it collects the trainable weights

# TFX reads these off a ComponentSpec / component class and calls these executor and
# resolver methods.
_.PARAMETERS
_.INPUTS
_.OUTPUTS
_.SPEC_CLASS
_.EXECUTOR_SPEC
_.GetInputSourceToExamplePTransform
_.resolve_artifacts
preprocessing_fn  # Transform loads the module file and calls it by name

# rectools calls these on a model it fits and ranks with.
_._fit
_._recommend_u2i

# Options objects that TensorFlow, TFLite and ML Metadata read after they are set.
_.auto_shard_policy  # tf.data.Options
_.supported_ops  # tf.lite.TFLiteConverter
_.optimizations
_.representative_dataset
_._experimental_calibrate_only
_.connection_mode  # metadata_store_pb2 SqliteMetadataSourceConfig

# Airflow finds the DAG as a module-level variable and names tasks by __qualname__.
DAG
_.__qualname__

# click calls this on a group to list its commands (ctx is its argument).
_.format_commands
ctx

# gRPC calls the servicer's methods by the RPC's name.
_.Classify
_.Regress
_.MultiInference
_.HandleReloadConfigRequest

# The canonical status codes (serving/errors.py Code): the whole table, as TF Serving has it.
_.CANCELLED
_.DEADLINE_EXCEEDED
_.ALREADY_EXISTS
_.PERMISSION_DENIED
_.ABORTED
_.OUT_OF_RANGE
_.UNAUTHENTICATED

# Fields read as a whole: dataclasses.asdict (the infra-validation report, the batching
# config written as TF Serving's proto) and NamedTuple equality (a version's fingerprint).
_.refusal_kind
_.grpc_p50_ms
_.grpc_p99_ms
_.server_log_tail
_.thread_pool_name
_.newest_mtime_ns

# A reference kept only so that what it points at stays alive (serving/servable.py).
_._keepalive

# The model manager's state names (serving/manager.py): START is TF Serving's first state.
START

# Context-manager protocol arguments (`__exit__(self, *exc)`).
exc
