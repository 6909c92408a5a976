"""What the runner commands (pipeline/cli/) share: the configuration a run starts with and how
it was chosen, the MLMD location, and the Beam options and their settings."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

from hyperrec.components import config as config_lib
from hyperrec.pipeline import beam as beam_lib


class UsageProblem(ValueError):
    """A command-line value that names nothing usable; the CLI shows it as a usage error
    (with the flag, when `param_hint` names one)."""

    def __init__(self, message: str, param_hint: str = ""):
        super().__init__(message)
        self.param_hint = param_hint


def beam_settings(config: config_lib.HyperrecConfig, image: str = "",
                  **options) -> beam_lib.BeamSettings:
    """The preset the command line chose; its errors are usage errors naming the flag."""
    settings = beam_lib.from_config(
        config, options["beam_preset"], project=options["project"], region=options["region"],
        temp_location=options["temp_location"], image=options["beam_image"] or image,
        job_endpoint=options["job_endpoint"], environment_type=options["environment_type"] or "",
        environment_config=options["environment_config"])
    try:
        beam_lib.pipeline_args(settings)
    except beam_lib.BeamSettingsError as err:
        raise UsageProblem(str(err)) from err
    return settings


def run_options(config: config_lib.HyperrecConfig, metadata: str, **beam) -> dict:
    """`hyperrec run`'s MLMD and Beam choices as local.run keywords, checked up front."""
    if metadata:
        _check_metadata(metadata)
    return {"metadata": metadata, "beam": beam_settings(config, **beam)}


def _check_metadata(location: str) -> None:
    """A metadata location that names no usable store is a usage error, not a traceback."""
    from hyperrec.pipeline.runners import metadata as metadata_lib
    try:
        metadata_lib.connection_config(location)
    except metadata_lib.MetadataUriError as err:
        raise UsageProblem(str(err)) from err


def store_location(workdir: str, metadata: str) -> str:
    """The MLMD store a command reads: --metadata, else WORKDIR/metadata.sqlite; a SQLite
    file that is not there or a URI that names no usable store is a usage error."""
    location = metadata or os.path.join(workdir, "metadata.sqlite")
    if "://" not in location and not os.path.isfile(location):
        raise UsageProblem(f"no MLMD store at {location} (give --workdir or --metadata)")
    _check_metadata(location)
    return location


def load_config(experiment: str, overrides: Sequence[str]) -> config_lib.HyperrecConfig:
    """The named experiment with `--set` overrides; a bad override is a usage error."""
    try:
        return config_lib.load(experiment, overrides)
    except ValueError as err:
        raise UsageProblem(str(err), "--set") from err


RUN_CONFIG_FILE = "run_config.json"  # beside the run's MLMD store; the run report shows it


def run_config(experiment: Optional[str], overrides: Sequence[str], data_root: str
               ) -> Tuple[config_lib.HyperrecConfig, Dict[str, Any]]:
    """`hyperrec run`'s configuration and the record of how it was chosen.

    A named experiment is used as named. Without one, an imported data root (its
    import_report.json has a `profile`) gets a configuration sized from the data
    (config.sized: each field with its reason); any other data root the default experiment.
    A schema derived from the data (DATA/schema.pbtxt, `hyperrec import table`) replaces the
    curated one unless `--set schema_file=` names one. `--set` overrides apply last.
    """
    from hyperrec.data import contract
    load_config(experiment or "default", overrides)  # a bad --set fails before sizing
    sizing: Dict[str, str] = {}
    report_path = os.path.join(data_root, contract.IMPORT_REPORT_FILE)
    profile = _profile(report_path) if experiment is None else None
    if experiment is not None:
        config = load_config(experiment, ())
        summary = f"experiment {experiment} (--experiment)"
    elif profile is not None:
        config, sizing = config_lib.sized(profile)
        summary = (f"sized from the data ({report_path}: {profile['events']:,} rows, "
                   f"{profile['users']:,} users, {profile['items']:,} items); name an "
                   "experiment with --experiment to use it instead")
    else:
        config = load_config("default", ())
        summary = (f"experiment default: {data_root} has no import profile "
                   f"({contract.IMPORT_REPORT_FILE} of `hyperrec import table`) to size from")
    derived = os.path.join(data_root, contract.SCHEMA_FILE)
    schema_set = any(o.partition("=")[0].strip() == "schema_file" for o in overrides)
    if os.path.isfile(derived) and not schema_set:
        config.schema_file = os.path.abspath(derived)
        schema_note = f"{derived} (derived from the data by `hyperrec import table`)"
    else:
        schema_note = config.schema_file + (" (--set schema_file)" if schema_set
                                            else " (curated)")
    try:
        config = config_lib.with_overrides(config, overrides)
    except ValueError as err:
        raise UsageProblem(str(err), "--set") from err
    for override in overrides:
        sizing.pop(override.partition("=")[0].strip(), None)
    return config, {"experiment": config.name, "summary": summary, "sizing": sizing,
                    "overrides": list(overrides), "schema_file": config.schema_file,
                    "schema": schema_note, "data_root": os.path.abspath(data_root),
                    "config": dataclasses.asdict(config)}


def _profile(report_path: str) -> Optional[Dict[str, Any]]:
    if not os.path.isfile(report_path):
        return None
    with open(report_path, encoding="utf-8") as handle:
        return json.load(handle).get("profile")


def print_run_config(record: Dict[str, Any], console) -> None:
    """The configuration a run starts with: how it was chosen, and each sized field's why."""
    console.print(f"[bold]configuration[/]: {record['summary']}", markup=True)
    for path, reason in sorted(record["sizing"].items()):
        value = record["config"]
        for part in path.split("."):
            value = value[part]
        console.print(f"  {path} = {json.dumps(value)}  ({reason})", markup=False)
    if record["overrides"]:
        console.print(f"  --set: {', '.join(record['overrides'])}", markup=False)
    console.print(f"  schema: {record['schema']}", markup=False)


def store_run_config(record: Dict[str, Any], workdir: str) -> str:
    """WORKDIR/run_config.json: the run's configuration and how it was chosen."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, RUN_CONFIG_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return path
