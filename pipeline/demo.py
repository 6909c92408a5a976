"""`make demo`: sample data -> full pipeline -> a recommendation read back from the pushed model."""
from __future__ import annotations

import csv
import os
import time

from rich.console import Console

from hyperrec.schemas import features
from hyperrec.components.example_gen import executor as example_gen_executor
from hyperrec.data import history as history_lib
from hyperrec.pipeline.runners import local as local_runner
from hyperrec.pipeline import demo_report
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.components.config import HyperrecConfig
from hyperrec.serving import saved_model


def pick_demo_user(data_root: str, history_length: int):
    """The most engaged user of the data, their history as of the end, last device and time."""
    events_by_user = {}
    last_seen = {}
    for name in sorted(os.listdir(data_root)):
        path = os.path.join(data_root, name, example_gen_executor.INTERACTIONS_FILE)
        if not name.startswith("span-") or not os.path.exists(path):
            continue
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                ts = example_gen_executor.parse_timestamp(row["timestamp"])
                events_by_user.setdefault(row["user_id"], []).append(
                    (ts, row["item_id"], row["event"], None))
                last_seen[row["user_id"]] = max(last_seen.get(row["user_id"], (0, "")),
                                                (ts, row.get("device", features.UNKNOWN)))
    def engaged(user):
        return sum(e[2] in features.POSITIVE_EVENTS for e in events_by_user[user])
    user = max(sorted(events_by_user), key=engaged)
    ts, device = last_seen[user]
    return user, history_lib.last_engaged(events_by_user[user], history_length), device, ts + 3600


def serve_and_recommend(serving_dir: str, user: str, past, device: str, ts: int, k: int,
                        console: Console):
    """Serves the pushed base path on free loopback ports and asks over REST and gRPC."""
    from hyperrec.serving.client import GrpcClient, RestClient
    from hyperrec.serving.config import ModelSettings
    from hyperrec.serving.server import ModelServer, ServerOptions

    options = ServerOptions(models=[ModelSettings(pipeline_def.MODEL_NAME, serving_dir)],
                            grpc_port=0, rest_port=0)
    with ModelServer(options) as server:
        rest = RestClient(port=server.rest_port)
        deadline = time.monotonic() + 300
        while True:  # the server loads (and warms up) the newest version in the background
            try:
                states = [v["state"] for v in rest.status()["model_version_status"]]
                if "AVAILABLE" in states:
                    break
            except Exception:  # not listening or not loaded yet  # noqa: BLE001
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the model server did not load {serving_dir}")
            time.sleep(0.2)
        console.print(f"serving {serving_dir} on REST 127.0.0.1:{server.rest_port} and gRPC "
                      f"127.0.0.1:{server.grpc_port}", soft_wrap=True)
        over_rest = rest.recommend(user, past, device, k, ts)
        grpc = GrpcClient(port=server.grpc_port)
        over_grpc = grpc.recommend(user, past, device, k, ts)
        rest.close()
        grpc.close()
    return over_rest, over_grpc


def ranking_gate_refusal(metadata_path: str) -> str:
    """The reason the newest RankingEvaluator refused its candidate, or "" if it blessed it.

    A refusal is the gate doing its job (a model no better than most-popular is not pushed),
    so the demo reports it and serves the last blessed version, if there is one.
    """
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    from hyperrec.components.evaluation import component as ranking_component

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    evaluations = store.get_artifacts_by_type(ranking_component.RankingEvaluation.TYPE_NAME)
    if not evaluations:
        return ""
    newest = max(evaluations, key=lambda a: a.id)
    if newest.custom_properties["blessed"].int_value:
        return ""
    return newest.custom_properties[ranking_component.REASON].string_value


def newest_candidate(pipeline_root: str) -> str:
    """The newest Trainer model's serving SavedModel under `pipeline_root` ("" if none)."""
    models = os.path.join(pipeline_root, "Trainer", "model")
    runs = sorted((int(name) for name in os.listdir(models) if name.isdigit())
                  if os.path.isdir(models) else [])
    for run in reversed(runs):
        candidate = os.path.join(models, str(run), "Format-Serving")
        if os.path.exists(os.path.join(candidate, "saved_model.pb")):
            return candidate
    return ""


def run_demo(config: HyperrecConfig, workdir: str, seed: int, console: Console) -> int:
    from hyperrec.data import synthetic as datagen
    start = time.monotonic()
    data_root = os.path.abspath(os.path.join(workdir, "data", f"{config.data_scale}-seed{seed}"))
    if os.path.exists(os.path.join(data_root, "ground_truth.json")):
        console.print(f"[dim]sample data already at {data_root} (deterministic; reused)[/]")
    else:
        console.print(f"[bold]generating[/] {config.data_scale} sample data (seed {seed})")
        t0 = time.monotonic()
        datagen.generate(config.data_scale, seed, data_root)
        console.print(f"[bold green]✔[/] data generated in {time.monotonic() - t0:.1f}s")

    paths = local_runner.run(config, data_root, workdir, console)
    user, past, device, ts = pick_demo_user(data_root, config.data.history_length)
    truth = demo_report.read_ground_truth(data_root)
    items = demo_report.read_items(data_root, truth)
    taste = demo_report.user_taste(truth, user)
    refusal = ranking_gate_refusal(paths.metadata_path)
    if refusal:
        console.print(f"\n[bold yellow]the ranking gate refused this run's model:[/] {refusal}",
                      soft_wrap=True)
        # What the refused model would have shown: the refusal is easier to judge by eye.
        candidate = newest_candidate(paths.pipeline_root)
        if candidate:
            demo_report.print_user_report(
                console, user, device, past,
                saved_model.recommend(candidate, user, past, device, ts, k=10),
                "the refused candidate (not pushed)", items, taste)
    if not saved_model.versions(paths.serving_dir):
        console.print("[bold]no model version has been pushed yet[/], so there is nothing to "
                      f"serve; the run report says why: {os.path.join(workdir, 'report.html')}",
                      soft_wrap=True)
        console.print(f"[bold]demo finished in {time.monotonic() - start:.1f}s[/]")
        return 0
    version, model_dir = saved_model.latest_version(paths.serving_dir)
    console.print(f"\n[bold]{'serving the last blessed model' if refusal else 'pushed model'}:"
                  f"[/] {model_dir}  (version {version})", soft_wrap=True)

    recs = saved_model.recommend(model_dir, user, past, device, ts, k=10)
    demo_report.print_user_report(console, user, device, past, recs,
                                  f"the pushed SavedModel (version {version})", items, taste)

    over_rest, over_grpc = serve_and_recommend(paths.serving_dir, user, past, device, ts, 10,
                                               console)
    for api, answer in (("REST", over_rest), ("gRPC", over_grpc)):
        console.print(f"{api:>4} :predict recommend -> {', '.join(i for i, _ in answer)}")
    same = [i for i, _ in over_rest] == [i for i, _ in over_grpc] == [i for i, _ in recs]
    console.print("[green]REST, gRPC and the in-process SavedModel agree[/]" if same else
                  "[red]REST, gRPC and the in-process SavedModel disagree[/]")
    console.print(f"[bold]demo finished in {time.monotonic() - start:.1f}s[/]")
    return 0 if same else 1
