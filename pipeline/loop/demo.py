"""`hyperrec loop-demo`: the retraining loop end to end on generated data, every step printed.

1. generate a scale's sample data; the data root first holds only the spans before the
   generator's shift; the local runner trains and pushes v1;
2. a server (this process, real sockets, a request log) serves the base path;
3. quiet traffic: two pre-shift spans replayed -> `monitor` windows -> the trigger starts
   nothing (no feature above threshold);
4. the shift: the shift span joins the data root, its requests are replayed -> the window
   drifts/skews on the shifted features -> the trigger runs `hyperrec run` (LocalRunner);
   the pipeline trains v2 on the new span, the ranking gate compares v2 with v1 (the last
   blessed model) on the post-shift eval period, the Pusher writes v2; a client thread keeps
   sending requests while the server swaps to v2 (failed requests are counted);
5. recall@10 of v1 and v2 on the post-shift eval period (the RankingEvaluator's numbers);
6. the shifted traffic once more: the trigger starts nothing (the span already triggered).

The loop's overrides (LOOP_OVERRIDES) make the post-shift period both trained on and
evaluated on: the eval split is the last half of the shift span, so v2 trains on its first
half and both models are scored on the rest.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from rich.console import Console

from hyperrec.components import config as config_lib
from hyperrec.components.evaluation import component as ranking_component
from hyperrec.components.evaluation import gate
from hyperrec.pipeline.loop import monitor as monitor_lib
from hyperrec.pipeline.loop import retrain, traffic
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.pipeline.runners import local as local_runner
from hyperrec.schemas import features

# Half of the 7-day shift span is trained on by v2, half is the eval split of both models.
# No validation slice and 8 epochs on all of the train split (an epoch of tiny is seconds;
# selection and refit would double the Trainer). The ranking gate compares v2 with v1 (the
# last blessed model) and blesses v2 only when its recall@10 is higher; TFMA's AUC floor is
# chance level, since tiny's 3.5-day eval split holds ~1000 impressions; no baseline is
# required (v1's lead over most-popular on its own eval split is a handful of targets).
LOOP_OVERRIDES = ("data.eval_days=3.5", "model.validation_days=0", "model.epochs=8",
                  "eval.min_auc=0.5", "eval.must_beat=", "eval.must_improve_on_blessed=true")
GATE_METRIC = "recall@10"
BATCH = 200  # examples per replayed predict request
LOOP_BATCH = 8  # examples per request of the client thread during the swap


@dataclasses.dataclass
class SwapTraffic:
    """What the client thread saw while v2 was trained and pushed."""

    sent: int = 0
    failed: int = 0
    errors: List[str] = dataclasses.field(default_factory=list)
    versions_before: List[int] = dataclasses.field(default_factory=list)
    versions_after: List[int] = dataclasses.field(default_factory=list)
    swap_seconds: Optional[float] = None  # push -> the server answers with v2


@dataclasses.dataclass
class LoopResult:
    workdir: str
    data_root: str
    shift_span: int
    v1: int
    v2: Optional[int]
    windows: Dict[str, Dict[str, Any]]  # quiet / shifted / repeat: the monitor summaries
    recall: Dict[str, float]  # v1 / v2 on the post-shift eval period
    gate_reason: str
    blessed: bool
    swap: SwapTraffic
    seconds: Dict[str, float]


def _copy_span(generated: str, data_root: str, span: int) -> None:
    shutil.copytree(os.path.join(generated, f"span-{span}"),
                    os.path.join(data_root, f"span-{span}"))


def prepare_data(scale: str, seed: int, workdir: str) -> tuple:
    """(generated root, data root with the spans before the shift, shift span)."""
    from hyperrec.data import synthetic
    generated = os.path.join(workdir, "generated")
    if not os.path.isdir(generated):
        synthetic.generate(scale, seed, generated)
    with open(os.path.join(generated, "ground_truth.json")) as f:
        shift = json.load(f)["shift"]["span"]
    data_root = os.path.join(workdir, "data")
    shutil.rmtree(data_root, ignore_errors=True)
    os.makedirs(data_root)
    for name in os.listdir(generated):
        if not name.startswith("span-") and os.path.isdir(os.path.join(generated, name)):
            shutil.copytree(os.path.join(generated, name), os.path.join(data_root, name))
    for span in range(1, shift):
        _copy_span(generated, data_root, span)
    return generated, data_root, shift


def _versions(serving_dir: str) -> List[int]:
    if not os.path.isdir(serving_dir):
        return []
    return sorted(int(d) for d in os.listdir(serving_dir) if d.isdigit())


def replay(client, examples: Sequence[bytes], batch: int = BATCH) -> int:
    """POSTs serving tf.Examples to serving_default; returns the requests sent."""
    for start in range(0, len(examples), batch):
        client.predict([{"b64": base64.b64encode(e).decode()}
                        for e in examples[start:start + batch]],
                       signature_name=features.SERVING_DEFAULT)
    return (len(examples) + batch - 1) // batch


def available_versions(client) -> List[int]:
    return sorted(int(v["version"]) for v in client.status()["model_version_status"]
                  if v["state"] == "AVAILABLE")


def wait_for_version(client, version: int, timeout: float = 300.0) -> float:
    """Seconds until the server answers with `version` AVAILABLE (its only one)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if available_versions(client) == [version]:
                return time.monotonic() - start
        except Exception:  # noqa: BLE001 (not listening / nothing loaded yet)
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server did not serve version {version} within {timeout:.0f}s")


class ClientThread(threading.Thread):
    """Sends small predict requests until stopped (4 a second: enough to catch a swap that
    takes one poll, little CPU taken from the run it waits for); every failure is counted
    with its text."""

    def __init__(self, port: int, examples: Sequence[bytes], traffic_record: SwapTraffic,
                 pause: float = 0.25):
        super().__init__(daemon=True)
        self.port, self.examples, self.record, self.pause = port, examples, traffic_record, pause
        self.stop_event = threading.Event()

    def run(self) -> None:
        from hyperrec.serving.client import RestClient
        client = RestClient(port=self.port, model_name=pipeline_def.MODEL_NAME)
        offset = 0
        try:
            while not self.stop_event.is_set():
                chunk = [self.examples[(offset + i) % len(self.examples)]
                         for i in range(LOOP_BATCH)]
                offset += LOOP_BATCH
                self.record.sent += 1
                try:
                    answer = client.predict([{"b64": base64.b64encode(e).decode()}
                                             for e in chunk],
                                            signature_name=features.SERVING_DEFAULT)
                    if len(answer["predictions"]) != LOOP_BATCH:
                        raise ValueError(f"{len(answer['predictions'])} predictions")
                except Exception as err:  # noqa: BLE001 (every failure counts, named)
                    self.record.failed += 1
                    self.record.errors.append(f"{type(err).__name__}: {err}"[:300])
                self.stop_event.wait(self.pause)
        finally:
            client.close()


def ranking_numbers(workdir: str) -> Dict[str, Any]:
    """The newest RankingEvaluator result in the run's MLMD: metrics.json as written."""
    from ml_metadata.metadata_store import metadata_store
    from hyperrec.pipeline.runners import metadata as metadata_lib
    store = metadata_store.MetadataStore(metadata_lib.connection_config(
        os.path.join(workdir, "metadata.sqlite")))
    newest = max(store.get_artifacts_by_type(ranking_component.RankingEvaluation.TYPE_NAME),
                 key=lambda a: a.id)
    with open(os.path.join(newest.uri, ranking_component.METRICS_JSON)) as f:
        return json.load(f)


def _window(console: Console, log_dir: str, workdir: str, schema: str, data_root: str,
            experiment: str, overrides: Sequence[str]) -> Dict[str, Any]:
    summary = monitor_lib.run(log_dir, workdir, schema)
    retrain.trigger_window(summary, workdir, data_root=data_root, experiment=experiment,
                           overrides=overrides,
                           announce=lambda line: console.print(line, markup=False))
    for line in monitor_lib.text_lines(summary) + retrain.trigger_lines(summary):
        console.print(line, markup=False)
    return summary


def run_loop(workdir: str, *, experiment: str = "tiny", seed: int = 42,
             overrides: Sequence[str] = (), console: Optional[Console] = None) -> LoopResult:
    """Runs the loop in `workdir` (generated data, data root, runs, request log, windows)."""
    from hyperrec.serving import config as serving_config
    from hyperrec.serving.client import RestClient
    from hyperrec.serving.server import ModelServer, ServerOptions
    console = console or Console()
    overrides = tuple(LOOP_OVERRIDES) + tuple(overrides)
    config = config_lib.load(experiment, overrides)
    workdir = os.path.abspath(workdir)
    schema = os.path.join(config_lib.project_root(), config.schema_file)
    seconds: Dict[str, float] = {}
    clock = time.monotonic()

    def step(title: str) -> None:
        console.rule(f"[bold]{title}")

    step(f"1. data ({config.data_scale}, seed {seed}) and v1")
    generated, data_root, shift = prepare_data(config.data_scale, seed, workdir)
    console.print(f"generated {generated}; the shift is at span {shift}; data root {data_root} "
                  f"holds spans 1-{shift - 1}")
    paths = local_runner.run(config, data_root, workdir, console)
    versions = _versions(paths.serving_dir)
    if not versions:
        raise RuntimeError(f"v1 was not pushed to {paths.serving_dir}: see the run report")
    v1 = versions[-1]
    v1_numbers = ranking_numbers(workdir)
    console.print(f"v1 = version {v1}: {v1_numbers['decision']['reason']}")
    seconds["v1"] = time.monotonic() - clock

    log_dir = os.path.join(workdir, "requests")
    options = ServerOptions(models=serving_config.single_model(pipeline_def.MODEL_NAME,
                                                                paths.serving_dir),
                            grpc_port=None, rest_port=0, poll_seconds=0.5,
                            request_log_dir=log_dir)
    windows: Dict[str, Dict[str, Any]] = {}
    swap = SwapTraffic()
    with ModelServer(options) as server:
        client = RestClient(port=server.rest_port, model_name=pipeline_def.MODEL_NAME)
        wait_for_version(client, v1)
        step(f"2. serving v1 on 127.0.0.1:{server.rest_port}; quiet traffic (spans "
             f"{shift - 2} and {shift - 1})")

        def requests_of(span: int) -> List[bytes]:
            return traffic.span_requests(generated, span, config.data.history_length,
                                         config.data.image_size)

        for span in (shift - 2, shift - 1):
            sent = replay(client, requests_of(span))
            console.print(f"replayed span {span}: {sent} requests")
            windows["quiet"] = _window(console, log_dir, workdir, schema, data_root,
                                       experiment, overrides)
        seconds["quiet"] = time.monotonic() - clock

        step(f"3. the shift: span {shift} arrives; its traffic is replayed")
        _copy_span(generated, data_root, shift)
        shifted = requests_of(shift)
        console.print(f"replayed span {shift}: {replay(client, shifted)} requests")
        swap.versions_before = available_versions(client)
        thread = ClientThread(server.rest_port, shifted, swap)
        thread.start()
        try:
            console.print("monitor --trigger (the triggered `hyperrec run` takes a few "
                          "minutes; a client thread keeps sending requests meanwhile)")
            windows["shifted"] = _window(console, log_dir, workdir, schema, data_root,
                                         experiment, overrides)
            seconds["retrain"] = time.monotonic() - clock
            versions = _versions(paths.serving_dir)
            v2 = versions[-1] if versions[-1] != v1 else None
            if v2 is not None:
                swap.swap_seconds = wait_for_version(client, v2)
                time.sleep(1.0)  # a few more requests against v2 alone
        finally:
            thread.stop_event.set()
            thread.join()
        swap.versions_after = available_versions(client)
        console.print(f"swap: {swap.sent} requests while retraining and swapping, "
                      f"{swap.failed} failed; versions {swap.versions_before} -> "
                      f"{swap.versions_after}"
                      + (f" ({swap.swap_seconds:.1f}s after the push)" if v2 else ""))

        step("4. the ranking gate on the post-shift eval period")
        numbers = ranking_numbers(workdir)
        overall = numbers["slices"]["overall"]
        values = overall.get("metrics", {})
        recall = {name: values[method][GATE_METRIC]["value"]
                  for name, method in (("v1", gate.BLESSED), ("v2", gate.CANDIDATE))
                  if method in values}
        decision = numbers["decision"]
        from hyperrec.data.synthetic import scales
        trained_days = scales.get_scale(config.data_scale).span_days - config.data.eval_days
        console.print(f"{overall['n_users']} users, {overall['n_targets']} targets after the "
                      f"shift span's first {trained_days:g} days")
        for name in ("v1", "v2"):
            if name in recall:
                console.print(f"recall@10 {name}: {recall[name]:.4f}")
        console.print(f"gate: {'BLESSED' if decision['blessed'] else 'NOT BLESSED'}: "
                      f"{decision['reason']}")

        step(f"5. the shifted traffic again (span {shift} once more)")
        console.print(f"replayed span {shift}: {replay(client, shifted)} requests")
        windows["repeat"] = _window(console, log_dir, workdir, schema, data_root,
                                    experiment, overrides)
        client.close()
    seconds["total"] = time.monotonic() - clock
    return LoopResult(workdir=workdir, data_root=data_root, shift_span=shift, v1=v1, v2=v2,
                      windows=windows, recall=recall, gate_reason=decision["reason"],
                      blessed=bool(decision["blessed"]), swap=swap, seconds=seconds)


def succeeded(result: LoopResult) -> bool:
    """Every step did what the loop shows: v2 blessed and better, a clean swap, and the
    quiet and repeated windows started nothing."""
    return (result.blessed and result.v2 is not None and result.swap.failed == 0
            and result.recall.get("v2", 0.0) > result.recall.get("v1", 1.0)
            and result.windows["shifted"]["trigger"]["started"]
            and not result.windows["quiet"]["trigger"]["started"]
            and not result.windows["repeat"]["trigger"]["started"])


def summary_lines(result: LoopResult) -> List[str]:
    quiet, shifted, repeat = (result.windows[k] for k in ("quiet", "shifted", "repeat"))
    lines = ["", "loop summary",
             f"  v1 = version {result.v1} (spans 1-{result.shift_span - 1}); "
             f"v2 = version {result.v2} (+ span {result.shift_span})",
             f"  quiet window {quiet['window']}: {quiet['trigger']['reason']}",
             f"  shifted window {shifted['window']}: drift {shifted['drifted_features']}, "
             f"skew {shifted['skewed_features']}; started run "
             f"{shifted['trigger']['run_id']}",
             f"  gate: {'BLESSED' if result.blessed else 'NOT BLESSED'}: {result.gate_reason}"]
    lines += [f"  recall@10 on the post-shift eval period: {name} {value:.4f}"
              for name, value in sorted(result.recall.items())]
    lines += [f"  swap: {result.swap.sent} requests during retraining and the swap, "
              f"{result.swap.failed} failed",
              f"  repeat window {repeat['window']}: {repeat['trigger']['reason']}",
              "  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()),
              f"  {'OK' if succeeded(result) else 'FAILED'}: {result.workdir}"]
    return lines
