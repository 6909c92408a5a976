"""Which `tf.distribute` strategy trains the model, and where each worker may write.

`ModelConfig.strategy` names one: "one_device", "mirrored" (all local GPUs, or all logical
CPUs where there is no GPU), "multi_worker_mirrored" (the cluster in TF_CONFIG), "tpu", or
"auto", which picks from what the machine offers:

- a TPU (TPU_NAME set, or a TPU VM's /dev/accel* devices) -> TPUStrategy;
- TF_CONFIG naming more than one task -> MultiWorkerMirroredStrategy;
- more than one local GPU -> MirroredStrategy;
- otherwise -> OneDeviceStrategy on the GPU, or on the CPU.

Multi-worker rules (TensorFlow's "multi-worker training with Keras" guide): every worker
runs the same program, the strategy is created before any other TensorFlow op, and every
worker saves (saving runs collective ops), but only the chief writes to the real
destination; the other workers write to a temporary directory of their own and delete it.
`write_dir` / `cleanup_write_dir` implement that.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def _tf_config() -> Dict[str, Any]:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def cluster_task_count() -> int:
    """Tasks in TF_CONFIG's cluster (0 without TF_CONFIG)."""
    return sum(len(tasks) for tasks in _tf_config().get("cluster", {}).values())


def tpu_present() -> bool:
    """A TPU is addressable: TPU_NAME is set (Cloud TPU) or TPU VM device files exist.

    Deliberately no TPUClusterResolver probe: on a machine without a TPU it queries the GCE
    metadata server over the network and waits for a timeout.
    """
    return bool(os.environ.get("TPU_NAME")) or bool(glob.glob("/dev/accel*"))


def auto_strategy_name() -> str:
    """The strategy "auto" resolves to on this machine (see the module docstring)."""
    if tpu_present():
        return "tpu"
    if cluster_task_count() > 1:
        return "multi_worker_mirrored"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "one_device"


def create_strategy(name: str = "auto", tpu: str = "") -> tf.distribute.Strategy:
    """The strategy for a `ModelConfig.strategy` value. Call it before any other TF op.

    Args:
      name: one of STRATEGIES.
      tpu: TPUClusterResolver address for "tpu" ("" = TPU_NAME or the local TPU VM).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
    if name == "auto":
        name = auto_strategy_name()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        if not (tpu or tpu_present()):
            raise ValueError("strategy 'tpu' but no TPU here: set ModelConfig.tpu or TPU_NAME")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        # Without GPUs: every logical CPU device (tests split the CPU into several).
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where this process writes the real outputs (always, except on multi-worker
    non-chief tasks: the "chief" task, or worker 0 when the cluster has no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:  # a single-process "cluster"
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def write_dir(path: str, strategy: tf.distribute.Strategy) -> str:
    """`path` on the chief; a per-task temporary sibling on the other workers."""
    if is_chief(strategy):
        return path
    resolver = strategy.cluster_resolver
    parent, name = os.path.split(path.rstrip("/"))
    return os.path.join(parent, f".{name}.workertemp_{resolver.task_type}_{resolver.task_id}")


def cleanup_write_dir(path: str, strategy: tf.distribute.Strategy) -> None:
    """Deletes a non-chief worker's temporary directory (nothing on the chief)."""
    temporary = write_dir(path, strategy)
    if not is_chief(strategy) and tf.io.gfile.exists(temporary):
        tf.io.gfile.rmtree(temporary)


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line for logs: the strategy's public name and its replica count."""
    # Check subclasses first: MultiWorkerMirroredStrategy is a CollectiveAllReduceStrategy,
    # not a MirroredStrategy, and reports the former class name.
    names = [(tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
             (tf.distribute.TPUStrategy, "TPUStrategy"),
             (tf.distribute.MirroredStrategy, "MirroredStrategy"),
             (tf.distribute.OneDeviceStrategy, "OneDeviceStrategy")]
    name = next((n for cls, n in names if isinstance(strategy, cls)), type(strategy).__name__)
    return f"{name} with {strategy.num_replicas_in_sync} replica(s)"

