"""Server-side request batching: concurrent requests to one signature run as one call.

A per-signature scheduler in the manner of TF Serving's BasicBatchScheduler/BatchingSession:
requests (tasks) join the open batch until it holds `max_batch_size` rows or its first task
has waited `batch_timeout_micros`; `num_batch_threads` workers each take the oldest ready
batch, concatenate the tasks' inputs along dimension 0 (padding unequal inner dimensions
with each tensor's first element when `pad_variable_length_inputs`, and the batch to the next
`allowed_batch_sizes` entry), run the signature once and hand every task its slice of the
outputs. More than `max_enqueued_batches` waiting batches is UNAVAILABLE, as in TF Serving.
Why it pays: a model's per-call cost (weights streamed through the cache, dispatch) is
shared by every row in the batch.
"""
from __future__ import annotations

import _thread
import collections
import threading
import time
from typing import Callable, Deque, Dict, List, Optional

import numpy as np

from hyperrec.serving import errors
from hyperrec.serving.config import BatchingOptions

Tensors = Dict[str, np.ndarray]
RunBatch = Callable[[Tensors], Tensors]


class _Task:
    """One request (or one piece of a split request) waiting for its slice of a batch.

    Completion is a bare lock held from creation and released by `finish`: one futex
    hand-off per task, where a threading.Event costs a Condition, a fresh waiter lock and
    the Condition's own lock on both sides (it shows at 32 concurrent requests).
    """

    __slots__ = ("inputs", "size", "_pending", "outputs", "error")

    def __init__(self, inputs: Tensors, size: int):
        self.inputs = inputs
        self.size = size
        self._pending = _thread.allocate_lock()
        self._pending.acquire()
        self.outputs: Optional[Tensors] = None
        self.error: Optional[errors.ServingError] = None

    def finish(self, outputs: Optional[Tensors], error: Optional[errors.ServingError]) -> None:
        self.outputs, self.error = outputs, error
        self._pending.release()

    def wait(self) -> None:
        self._pending.acquire()
        self._pending.release()  # later waits (none today) return at once


class _Batch:
    __slots__ = ("tasks", "size", "opened")

    def __init__(self):
        self.tasks: List[_Task] = []
        self.size = 0
        self.opened = 0.0


def batch_size_of(inputs: Tensors) -> int:
    """The shared 0th dimension of a request's inputs (TF Serving's batching precondition)."""
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise errors.invalid_argument(
                "Batching Run() input tensors must have at least one dimension")
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise errors.invalid_argument(
            "Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop() if sizes else 0


def _pad_to(array: np.ndarray, inner_shape: tuple) -> np.ndarray:
    """`array` grown to [rows, *inner_shape], new cells holding its first element."""
    if array.shape[1:] == inner_shape:
        return array
    fill = array.flat[0] if array.size else np.zeros((), array.dtype).item()
    padded = np.full((array.shape[0],) + inner_shape, fill, dtype=array.dtype)
    padded[tuple(slice(0, d) for d in array.shape)] = array
    return padded


def merge_inputs(tasks: List[_Task], pad_variable_length: bool) -> Tensors:
    """The tasks' inputs concatenated along dimension 0."""
    merged = {}
    for name in tasks[0].inputs:
        arrays = [task.inputs[name] for task in tasks]
        inner_shapes = {array.shape[1:] for array in arrays}
        if len(inner_shapes) > 1:
            ranks = {len(shape) for shape in inner_shapes}
            if not pad_variable_length or len(ranks) > 1:
                raise errors.invalid_argument(
                    f"Tensors with name '{name}' from different tasks have different shapes and "
                    "padding is turned off. Set pad_variable_length_inputs to true, or ensure "
                    "that all tensors with the same name have equal dimensions starting with "
                    "the first dim.")
            target = tuple(max(dims) for dims in zip(*inner_shapes))
            arrays = [_pad_to(array, target) for array in arrays]
        merged[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    return merged


def _pad_rows(inputs: Tensors, rows: int, target_rows: int) -> Tensors:
    """Rounds the batch up to an allowed size by repeating its first row."""
    if target_rows == rows:
        return inputs
    return {name: np.concatenate([array, np.repeat(array[:1], target_rows - rows, axis=0)])
            for name, array in inputs.items()}


class BatchScheduler:
    """Batches the calls of one signature; `run` blocks until the request's rows are done."""

    def __init__(self, run_batch: RunBatch, options: BatchingOptions, name: str = "batch",
                 on_batch: Optional[Callable[[int], None]] = None):
        self._run_batch = run_batch
        self._options = options
        self._capacity = options.execution_batch_size
        self._timeout = options.batch_timeout_micros / 1e6
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._batches: Deque[_Batch] = collections.deque([_Batch()])
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    # -- submitting --------------------------------------------------------------------------

    def run(self, inputs: Tensors) -> Tensors:
        size = batch_size_of(inputs)
        if size > self._options.max_batch_size:
            raise errors.invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{self._options.max_batch_size}")
        if size == 0 or self._closed:
            return self._run_batch(inputs)  # nothing to share (or shutting down): run inline
        tasks = self._schedule(inputs, size)
        for task in tasks:
            task.wait()
        for task in tasks:
            if task.error is not None:
                raise task.error
        if len(tasks) == 1:
            return tasks[0].outputs
        return {name: np.concatenate([task.outputs[name] for task in tasks], axis=0)
                for name in tasks[0].outputs}

    def _pieces(self, inputs: Tensors, size: int, room: int) -> List[_Task]:
        if size <= room or not self._options.enable_large_batch_splitting:
            return [_Task(inputs, size)]
        bounds, start = [], 0
        step = room if room > 0 else self._capacity
        while start < size:
            bounds.append((start, min(size, start + step)))
            start, step = start + step, self._capacity
        return [_Task({k: v[a:b] for k, v in inputs.items()}, b - a) for a, b in bounds]

    def _schedule(self, inputs: Tensors, size: int) -> List[_Task]:
        with self._lock:  # the deque always ends with the open batch (possibly empty)
            tasks = self._pieces(inputs, size, self._capacity - self._batches[-1].size)
            new_batches, fill = 0, self._batches[-1].size
            for task in tasks:
                if fill + task.size > self._capacity:
                    new_batches, fill = new_batches + 1, 0
                fill += task.size
            if len(self._batches) + new_batches > self._options.max_enqueued_batches:
                raise errors.unavailable(
                    "The batch scheduling queue to which this task was submitted is full")
            for task in tasks:
                batch = self._batches[-1]
                if batch.size + task.size > self._capacity:
                    batch = _Batch()
                    self._batches.append(batch)
                if not batch.tasks:
                    batch.opened = time.monotonic()
                batch.tasks.append(task)
                batch.size += task.size
            self._wakeup.notify()  # one idle worker re-checks; waking all only burns the GIL
        return tasks

    # -- processing --------------------------------------------------------------------------

    def _ready_batch(self) -> Optional[_Batch]:
        """Pops the oldest batch that may run now, or returns None (lock held)."""
        if not self._batches[0].tasks:
            return None
        first = self._batches[0]
        closed = len(self._batches) > 1  # a newer batch was opened: this one is complete
        full = first.size >= self._capacity
        expired = time.monotonic() - first.opened >= self._timeout
        if closed or full or expired or self._closed:
            self._batches.popleft()
            if not self._batches:
                self._batches.append(_Batch())
            return first
        return None

    def _wait_time(self) -> Optional[float]:
        if not self._batches[0].tasks:
            return None
        return max(self._batches[0].opened + self._timeout - time.monotonic(), 0.0)

    def _work(self) -> None:
        while True:
            with self._lock:
                batch = self._ready_batch()
                while batch is None:
                    if self._closed and not any(b.tasks for b in self._batches):
                        return
                    self._wakeup.wait(self._wait_time())
                    batch = self._ready_batch()
                if self._batches[0].tasks:
                    self._wakeup.notify()  # another worker may take the next ready batch
            self._process(batch)

    def _process(self, batch: _Batch) -> None:
        try:
            inputs = merge_inputs(batch.tasks, self._options.pad_variable_length_inputs)
            rows = batch.size
            target = next((s for s in self._options.allowed_batch_sizes if s >= rows), rows)
            outputs = self._run_batch(_pad_rows(inputs, rows, target))
            for name, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != target:
                    raise errors.internal(
                        f"Batched output tensor '{name}' has 0th dimension "
                        f"{array.shape[0] if array.ndim else 'none'} which is not equal to the "
                        f"batch size {target}")
            if self._on_batch is not None:
                self._on_batch(rows)
        except Exception as err:  # every task of the batch shares the failure
            failure = errors.from_exception(err)
            for task in batch.tasks:
                task.finish(None, failure)
            return
        start = 0
        for task in batch.tasks:
            end = start + task.size
            task.finish({name: array[start:end] for name, array in outputs.items()}, None)
            start = end

    def close(self) -> None:
        """Stops taking new batches once the queued ones have run (in-flight calls finish)."""
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()
