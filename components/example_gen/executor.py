"""Beam executor of the multimodal ExampleGen (runs unchanged on Direct, Dataflow, Flink, Spark).

Where data enters the pipeline. TFX's FileBasedExampleGen driver resolves the latest span
(`span-{SPAN}/*.csv`) and fingerprints it, so a new span triggers a run; this executor then:

1. reads the interactions of the latest span and the `window_spans - 1` spans before it, and
   the catalogue snapshot (`items.csv`) of the latest span;
2. normalises every item image once (images.py) and flags missing / corrupt ones;
3. adds point-in-time user history (history.py) to every interaction;
4. joins interactions with items (CoGroupByKey; an unknown item id is counted, not emitted);
5. splits by time: the last `eval_days` of the window are `eval`, the rest `train` (never by
   hash), marks items first seen after that cutoff as cold start, and writes the whole
   catalogue as a third split, `catalog`, for the model to embed at export; interactions later
   than the horizon (the ingest time unless configured) are quarantined first, so one row
   dated 2099 cannot move the cutoff;
6. reports users above `max_user_share` of a split (and caps them when configured);
7. counts what it read, flagged and dropped into `ingest_report.json` beside the splits and
   into the Examples artifact's custom properties, and stops the run when the eval split is
   smaller than `min_eval_examples`;
8. writes every split in one order that depends only on the examples' bytes (sorted by a
   hash of them, `in_stable_order`): the joins above emit an item's events together, and a
   Trainer whose 10,000-row shuffle buffer reads that order trains on a few dozen items at a
   time; the hash order is mixed and the same on every run and runner.

Row parsing and checks live in contract_rows.py, tf.Example building, heavy-user caps and
the split order in examples.py; this module wires them into one Beam pipeline.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import Any, Dict, List

import apache_beam as beam
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from absl import logging
from tfx.utils import proto_utils

from hyperrec.components import config as config_lib
from hyperrec.data import contract
from hyperrec.schemas import features
from hyperrec.components.example_gen.contract_rows import (
    ContractError, EvalSplitTooSmallError, check_header, outcome_counts, parse_interaction,
    parse_item, parse_timestamp, quarantine_future, read_csv_rows)
from hyperrec.components.example_gen.examples import (
    catalog_example, in_stable_order, interaction_examples, user_history, user_shares)
from hyperrec.components.example_gen.layout import SPAN_DIR as _SPAN_DIR

REPORT_FILE = "ingest_report.json"
QUARANTINE_DIR = "quarantine"  # beside the report: rows kept aside, one JSON object a line
ITEMS_FILE = "items.csv"
INTERACTIONS_FILE = "interactions.csv"


# ---- configuration ---------------------------------------------------------------------------
def encode_custom_config(values: Dict[str, Any]) -> example_gen_pb2.CustomConfig:
    """Packs a plain dict (DataConfig as dict) into ExampleGen's CustomConfig proto."""
    struct = struct_pb2.Struct()
    struct.update(values)
    config = example_gen_pb2.CustomConfig()
    config.custom_config.Pack(struct)
    return config


def decode_custom_config(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not raw:
        return {}
    config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(raw, config)
    struct = struct_pb2.Struct()
    config.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


def window_span_dirs(input_base: str, latest_span: int, window_spans: int) -> List[str]:
    """The span folders of the rolling window: spans in (latest - K, latest], oldest first."""
    found = {}
    for name in tf.io.gfile.listdir(input_base):
        match = _SPAN_DIR.match(name.rstrip("/"))
        if match:
            found[int(match.group(1))] = os.path.join(input_base, name.rstrip("/"))
    first = latest_span - max(window_spans, 1) + 1
    return [found[s] for s in sorted(found) if first <= s <= latest_span]


# ---- what the report must say out loud --------------------------------------------------------
def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_warnings(report: Dict[str, Any]) -> List[str]:
    """Lines for what was kept aside or looks skewed: quarantined rows, heavy users."""
    lines = []
    future = report.get("interaction_future_timestamp", 0)
    if future:
        lines.append(f"{future} interaction(s) later than the horizon "
                     f"{_iso(report['timestamp_horizon'])} quarantined ({QUARANTINE_DIR}/)")
    for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
        for user, share in sorted(report.get(f"user_share_{split}", {}).items()):
            lines.append(f"user {user} is {share['share']:.1%} of the {split} split "
                         f"({share['examples']} rows; threshold "
                         f"{report['user_share_threshold']:.0%})")
    return lines


def eval_split_problem(report: Dict[str, Any], config: config_lib.DataConfig) -> str:
    """Why the eval split is too small to judge a model ("" when it is not)."""
    size = report.get("eval_examples", 0)
    if size >= config.min_eval_examples:
        return ""
    why = (f"the eval split has {size} example(s), fewer than data.min_eval_examples="
           f"{config.min_eval_examples}: it holds the interactions of the last "
           f"data.eval_days={config.eval_days:g} day(s) before the newest one")
    if report.get("newest_timestamp"):
        why += (f" ({_iso(report['newest_timestamp'])}, cutoff "
                f"{_iso(report['cutoff_timestamp'])})")
    dropped = {k: v for k, v in report.items() if k.startswith("interaction_") and k not in (
        "interaction_read",) and isinstance(v, int) and v}
    if dropped:
        why += f"; rows dropped before the split: {dropped}"
    return why


# ---- the executor ---------------------------------------------------------------------------
class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Joins interactions, catalogue and images into train / eval / catalog tf.Examples."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError(
            "hyperrec's ExampleGen reads several sources at once; see GenerateExamplesByBeam")

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        self._report_path = os.path.join(examples.uri, REPORT_FILE)
        self._write_examples(examples, exec_properties)
        with tf.io.gfile.GFile(self._report_path) as f:
            report = json.load(f)
        for name, value in report.items():
            if isinstance(value, int):
                examples.set_int_custom_property(name, value)
            else:
                examples.set_string_custom_property(name, json.dumps(value))
        config = config_lib.from_dict(config_lib.DataConfig, decode_custom_config(exec_properties))
        for line in report_warnings(report):
            logging.warning("ExampleGen: %s", line)
        problem = eval_split_problem(report, config)
        if problem:
            raise EvalSplitTooSmallError(f"{problem}; ingest report: {self._report_path}")

    def _write_examples(self, examples: Any, exec_properties: Dict[str, Any]) -> None:
        """BaseExampleGenExecutor.Do without its Reshuffle before the write: each split is
        written in the order `in_stable_order` gives it (runner-sized shards keep the order
        within a shard; TFX's WriteSplit reshuffles, which on the DirectRunner keeps the
        join's per-item runs and differs between runs)."""
        input_config = proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], example_gen_pb2.Input())
        output_config = proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
            example_gen_pb2.Output())
        examples.split_names = artifact_utils.encode_split_names(
            example_gen_utils.generate_output_split_names(input_config, output_config))
        with self._make_beam_pipeline() as pipeline:
            for name, split in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                _ = split | f"WriteSplit[{name}]" >> beam.io.WriteToTFRecord(
                    os.path.join(artifact_utils.get_split_uri([examples], name),
                                 write_split.DEFAULT_FILE_NAME),
                    file_name_suffix=".gz")
        payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
        if payload_format:
            examples_utils.set_payload_format(examples, payload_format)
        examples_utils.set_file_format(examples, write_split.to_file_format_str(
            exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
                                example_gen_pb2.FILE_FORMAT_UNSPECIFIED)))

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
                               ) -> Dict[str, beam.pvalue.PCollection]:
        config = config_lib.from_dict(config_lib.DataConfig, decode_custom_config(exec_properties))
        image_size = config.image_size
        history_length = config.history_length
        horizon = (parse_timestamp(config.timestamp_horizon) if config.timestamp_horizon
                   else int(time.time()))
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        span = int(exec_properties.get(example_gen_utils.SPAN_PROPERTY_NAME) or 0)
        span_dirs = window_span_dirs(input_base, span, config.window_spans)
        if not span_dirs:
            raise ContractError(f"no span-N folders under {input_base} for span {span}")
        interaction_files = [os.path.join(d, INTERACTIONS_FILE) for d in span_dirs
                             if tf.io.gfile.exists(os.path.join(d, INTERACTIONS_FILE))]
        items_file = os.path.join(span_dirs[-1], ITEMS_FILE)
        if not tf.io.gfile.exists(items_file):
            raise ContractError(f"the latest span has no catalogue snapshot: {items_file}")
        ignored_columns = sorted(set(check_header(items_file, features.ITEM_COLUMNS)).union(
            *(check_header(path, features.INTERACTION_COLUMNS, features.CONTEXT_COLUMNS)
              for path in interaction_files)))

        items_parsed = (pipeline
                        | "ItemFiles" >> beam.Create([items_file])
                        | "ReadItems" >> beam.FlatMap(read_csv_rows)
                        | "ParseItems" >> beam.Map(parse_item, input_base, image_size))
        items = (items_parsed
                 | "OkItems" >> beam.Filter(lambda p: p.record is not None)
                 | "ItemKV" >> beam.Map(lambda p: p.record)
                 # A duplicated item id keeps one deterministic row (the smallest).
                 | "OneRowPerItem" >> beam.CombinePerKey(
                     lambda rows: min(rows, key=lambda r: json.dumps(
                         {k: str(v) for k, v in r.items()}, sort_keys=True))))

        events_parsed = (pipeline
                         | "InteractionFiles" >> beam.Create(interaction_files)
                         | "ReadInteractions" >> beam.FlatMap(read_csv_rows)
                         | "ParseInteractions" >> beam.Map(parse_interaction)
                         | "QuarantineFuture" >> beam.Map(quarantine_future, horizon))
        _ = (events_parsed
             | "Quarantined" >> beam.Filter(lambda p: p.quarantined is not None)
             | "QuarantineJson" >> beam.Map(lambda p: json.dumps(
                 {"reason": p.skipped, **p.quarantined}, sort_keys=True))
             | "WriteQuarantine" >> beam.io.WriteToText(
                 os.path.join(os.path.dirname(self._report_path), QUARANTINE_DIR,
                              "interactions"), file_name_suffix=".jsonl", num_shards=1))
        # An exact duplicate row (same user, item, time, event, context) is one event.
        event_counts = (events_parsed
                        | "OkEvents" >> beam.Filter(lambda p: p.record is not None)
                        | "EventKey" >> beam.Map(lambda p: tuple(sorted(p.record.items())))
                        | "CountDuplicates" >> beam.combiners.Count.PerElement())
        events = event_counts | "EventRecords" >> beam.Map(lambda kv: dict(kv[0]))
        duplicates = event_counts | "Duplicates" >> beam.FlatMap(
            lambda kv: ["interaction_duplicate"] * (kv[1] - 1))

        last_ts = (events
                   | "Timestamps" >> beam.Map(lambda r: r["timestamp"])
                   | "LastTimestamp" >> beam.CombineGlobally(lambda ts: max(ts, default=0)))
        cutoff = beam.pvalue.AsSingleton(
            last_ts | "Cutoff" >> beam.Map(contract.eval_cutoff, config.eval_days))

        with_past = (events
                     | "ByUser" >> beam.Map(lambda r: (r["user_id"], r))
                     | "GroupByUser" >> beam.GroupByKey()
                     | "PointInTimeHistory" >> beam.FlatMap(user_history, history_length))
        joined = ({"item": items, "events": with_past}
                  | "JoinItems" >> beam.CoGroupByKey()
                  | "ToExamples" >> beam.FlatMap(interaction_examples, cutoff))

        splits = joined | "BySplit" >> beam.Partition(
            lambda kv, n: {features.TRAIN_SPLIT: 0, features.EVAL_SPLIT: 1}.get(kv[0], 2), 3)
        train, train_shares, train_capped = user_shares(
            splits[0], features.TRAIN_SPLIT, config.max_user_share, config.cap_user_share)
        evals, eval_shares, eval_capped = user_shares(
            splits[1], features.EVAL_SPLIT, config.max_user_share, config.cap_user_share)
        catalog = (items
                   | "CatalogExamples" >> beam.Map(lambda kv, c: catalog_example(kv[1], c),
                                                   cutoff))

        counts = (
            (events_parsed | "ParseOutcome" >> beam.FlatMap(outcome_counts, "interaction_read"),
             items_parsed | "ItemOutcome" >> beam.FlatMap(outcome_counts, "item_read"),
             duplicates,
             items | "ItemCount" >> beam.Map(lambda _: "catalog_items"),
             splits[2] | "DroppedCount" >> beam.Map(lambda kv: kv[1]),
             train_capped, eval_capped,
             train | "TrainCount" >> beam.Map(lambda _: "train_examples"),
             evals | "EvalCount" >> beam.Map(lambda _: "eval_examples"))
            | "AllCounts" >> beam.Flatten()
            | "CountEach" >> beam.combiners.Count.PerElement()
            | "AsDict" >> beam.combiners.ToDict())
        _ = (counts
             | "WithCutoff" >> beam.Map(
                 lambda d, c, last, ts, es: {
                     **d, "cutoff_timestamp": c, "newest_timestamp": last,
                     "timestamp_horizon": horizon, "ignored_columns": ignored_columns,
                     "latest_span": span, "window_first_span": _span_of(span_dirs[0]),
                     "user_share_threshold": config.max_user_share,
                     f"user_share_{features.TRAIN_SPLIT}": ts,
                     f"user_share_{features.EVAL_SPLIT}": es},
                 cutoff, beam.pvalue.AsSingleton(last_ts),
                 beam.pvalue.AsSingleton(train_shares), beam.pvalue.AsSingleton(eval_shares))
             | "WriteReport" >> beam.Map(_write_report, self._report_path))

        return {
            name: in_stable_order(split, name, config.order_buckets)
            for name, split in ((features.TRAIN_SPLIT, train), (features.EVAL_SPLIT, evals),
                                (features.CATALOG_SPLIT, catalog))}


def _span_of(span_dir: str) -> int:
    return int(_SPAN_DIR.match(os.path.basename(span_dir)).group(1))


def _write_report(report: Dict[str, Any], path: str) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump({k: report[k] for k in sorted(report)}, f, indent=1)
