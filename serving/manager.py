"""The model manager: which versions are served, their lifecycle, and handle lookup.

TF Serving's ServerCore + AspiredVersionsManager with the AvailabilityPreservingPolicy, in
one polling loop per server:
1. scan each model's base path; versions whose directory stopped changing are *ready*;
2. the version policy (latest N / all / specific) picks the *aspired* versions among the
   ready ones, skipping versions that already failed to load with the same contents (so
   `latest` falls back to the newest *good* version, also after a restart);
3. aspired versions not yet loaded are loaded and warmed up while the current ones keep
   serving; only then is the served set swapped (one dict update under a lock);
4. versions no longer aspired are unloaded, unless that would leave the model with nothing
   to serve (a failed new version leaves the old one serving).
With a LoadFailureRecord, failures are also remembered across restarts by content digest:
the first pass of a start skips a version that already failed with the same contents (so the
ports open on the newest good version without waiting for the broken one to fail again), and
the first background poll retries it once.
Every version the manager touched keeps a state (START, LOADING, AVAILABLE, UNLOADING, END)
and the status of its last transition, which is what GetModelStatus reports.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from hyperrec.serving import errors, version_scanner, warmup
from hyperrec.serving.config import BatchingOptions, ModelSettings
from hyperrec.serving.load_failures import Failure, LoadFailureRecord
from hyperrec.serving.metrics import ServingMetrics
from hyperrec.serving.servable import Servable

LOG = logging.getLogger("serving.manager")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
_INITIAL_SETTLE_SECONDS = 0.05  # gap between the two start-up scans that establish readiness


@dataclasses.dataclass
class VersionState:
    """A version's lifecycle state and the outcome of its last transition."""
    state: str
    error_code: errors.Code = errors.Code.OK
    error_message: str = ""


class _Model:
    """Everything the manager tracks for one configured model."""

    def __init__(self, settings: ModelSettings):
        self.settings = settings
        self.readiness = version_scanner.ReadinessTracker()
        self.available: Dict[int, Servable] = {}
        self.states: Dict[int, VersionState] = {}
        self.failed: Dict[int, version_scanner.Fingerprint] = {}
        self.primed = False  # readiness needs a first scan to compare against
        self.recalled = False  # remembered failures looked up (first pass)
        self.retry: List[int] = []  # remembered failures to try again in the background


Loader = Callable[[str, int, str], Servable]


class ModelManager:
    """Loads, swaps and looks up servables for the configured models."""

    def __init__(self, models: Sequence[ModelSettings],
                 batching: Optional[BatchingOptions] = None, poll_seconds: float = 1.0,
                 metrics: Optional[ServingMetrics] = None, enable_warmup: bool = True,
                 config_source: Optional[Callable[[], List[ModelSettings]]] = None,
                 config_poll_seconds: float = 0.0, loader: Optional[Loader] = None,
                 failure_record: Optional[LoadFailureRecord] = None):
        self._batching = batching
        self._poll_seconds = poll_seconds
        self._metrics = metrics or ServingMetrics()
        self._enable_warmup = enable_warmup
        self._config_source = config_source
        self._config_poll_seconds = config_poll_seconds
        self._loader = loader or self._load_servable
        self._failure_record = failure_record
        self._retries_allowed = False  # set once the ports are open (enable_retries)
        self._lock = threading.Lock()  # guards the model table and each model's maps
        self._reconcile_lock = threading.Lock()  # one reconcile pass at a time
        self._models: Dict[str, _Model] = {m.name: _Model(m) for m in models}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Loads the initial versions (blocking), then polls in the background. Remembered
        failures are retried by the polls after enable_retries()."""
        self.reconcile()
        if self._poll_seconds > 0 or (self._config_source and self._config_poll_seconds > 0):
            self._thread = threading.Thread(target=self._poll_loop, name="model-manager",
                                            daemon=True)
            self._thread.start()

    def enable_retries(self) -> None:
        """Lets the polls retry versions skipped for a remembered failure: called once the
        ports are open, so a retry's CPU does not delay them."""
        self._retries_allowed = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            servables = [s for model in self._models.values() for s in model.available.values()]
        for servable in servables:
            servable.close()

    def _poll_loop(self) -> None:
        intervals = [s for s in (self._poll_seconds, self._config_poll_seconds) if s > 0]
        interval = min(intervals)
        next_config = time.monotonic() + self._config_poll_seconds
        while not self._stop.wait(interval):
            try:
                if self._config_source and self._config_poll_seconds > 0 \
                        and time.monotonic() >= next_config:
                    next_config = time.monotonic() + self._config_poll_seconds
                    self.reload(self._config_source())
                elif self._poll_seconds > 0:
                    self.reconcile()
            except Exception:  # a bad poll must not kill the loop that keeps models fresh
                LOG.exception("model manager poll failed")

    # -- configuration -------------------------------------------------------------------------

    def reload(self, models: Sequence[ModelSettings]) -> None:
        """Switches to a new model list (ReloadConfig): new models load, removed ones unload."""
        with self._reconcile_lock:
            removed = []
            with self._lock:
                new_table = {}
                for settings in models:
                    current = self._models.get(settings.name)
                    if current is not None and current.settings.base_path == settings.base_path:
                        current.settings = settings
                        new_table[settings.name] = current
                    else:
                        new_table[settings.name] = _Model(settings)
                        if current is not None:
                            removed.append(current)
                removed.extend(m for name, m in self._models.items() if name not in new_table)
                self._models = new_table
            for model in removed:
                for version in sorted(model.available):
                    self._unload(model, version)
            self._reconcile_all()

    def model_names(self) -> List[str]:
        with self._lock:
            return sorted(self._models)

    # -- reconciling ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        """One poll: scan, load what is aspired, unload what is not."""
        with self._reconcile_lock:
            self._reconcile_all()

    def _models_snapshot(self) -> List[_Model]:
        with self._lock:
            return list(self._models.values())

    def _reconcile_all(self) -> None:
        for model in self._models_snapshot():
            try:
                self._reconcile_model(model)
            except Exception:
                LOG.exception("reconciling model %s failed", model.settings.name)

    def _reconcile_model(self, model: _Model) -> None:
        if not model.primed:  # a new model: two scans a moment apart tell settled versions
            model.readiness.observe(version_scanner.scan(model.settings.base_path))
            time.sleep(_INITIAL_SETTLE_SECONDS)
            model.primed = True
        scanned = version_scanner.scan(model.settings.base_path)
        ready = model.readiness.observe(scanned)
        with self._lock:
            serving_now = set(model.available)
        # A served version stays a candidate while its directory exists, even if a file in it
        # was touched: readiness gates loading, it must not make a served version flap.
        ready.update({v: fp for v, fp in scanned.items() if v in serving_now})
        if not model.recalled:
            self._recall_failures(model, ready)
        elif self._retries_allowed and model.retry:
            for version in model.retry:  # serving already: the broken one may try again
                model.failed.pop(version, None)
            model.retry = []
        for version in list(model.failed):  # changed contents deserve a new attempt
            if ready.get(version, model.failed[version]) != model.failed[version]:
                del model.failed[version]
        while True:
            candidates = [v for v in ready if v not in model.failed]
            aspired = model.settings.policy.choose(candidates)
            to_load = [v for v in aspired if v not in model.available]
            if not to_load:
                break
            failures = 0
            for version in to_load:
                if not self._load(model, version, ready[version]):
                    failures += 1
            if not failures:
                break
        self._unload_unaspired(model, aspired)

    def _version_dir(self, model: _Model, version: int) -> str:
        return f"{model.settings.base_path.rstrip('/')}/{version}"

    def _recall_failures(self, model: _Model,
                         ready: Dict[int, version_scanner.Fingerprint]) -> None:
        """Marks the ready versions that failed before with the same contents as failed, with
        their remembered status, and queues them for one background retry."""
        model.recalled = True
        if self._failure_record is None:
            return
        for version in sorted(ready, reverse=True):
            failure = self._failure_record.recall(self._version_dir(model, version))
            if failure is None:
                continue
            code = errors.Code[failure.code] if failure.code in errors.Code.__members__ \
                else errors.Code.UNKNOWN
            model.failed[version] = ready[version]
            model.retry.append(version)
            self._set_state(model, version, VersionState(END, code, failure.message))
            LOG.info("Skipping servable version {name: %s version: %d} until the ports are "
                     "open: it failed to load before with the same contents (%s)",
                     model.settings.name, version, failure.message)

    def _unload_unaspired(self, model: _Model, aspired: List[int]) -> None:
        with self._lock:
            available = sorted(model.available, reverse=True)
        serving_aspired = [v for v in available if v in aspired]
        # Availability preserving: with no aspired version up, keep the newest one serving.
        keep = set(serving_aspired) if serving_aspired else set(available[:1])
        for version in available:
            if version not in keep:
                self._unload(model, version)

    def _load_servable(self, model_name: str, version: int, path: str) -> Servable:
        servable = Servable.load(model_name, version, path, self._batching,
                                 on_batch=self._metrics.observe_batch)
        if self._enable_warmup:
            try:
                warmup.replay(servable)
            except Exception:
                servable.close()
                raise
        return servable

    def _load(self, model: _Model, version: int,
              fingerprint: version_scanner.Fingerprint) -> bool:
        name = model.settings.name
        path = self._version_dir(model, version)
        self._set_state(model, version, VersionState(LOADING))
        LOG.info("Loading servable version {name: %s version: %d} from %s", name, version, path)
        started = time.monotonic()
        try:
            servable = self._loader(name, version, path)
        except Exception as err:
            failure = errors.from_exception(err)
            model.failed[version] = fingerprint
            self._set_state(model, version, VersionState(END, failure.code, failure.message))
            self._metrics.observe_load(path, ok=False)
            if self._failure_record is not None:
                self._failure_record.remember(path, Failure(failure.code.name, failure.message))
            LOG.error("Loading servable version {name: %s version: %d} failed: %s",
                      name, version, failure)
            return False
        with self._lock:
            model.available[version] = servable
            model.states[version] = VersionState(AVAILABLE)
        self._metrics.observe_load(path, ok=True)
        if self._failure_record is not None:
            self._failure_record.forget(path)
        LOG.info("Successfully loaded servable version {name: %s version: %d} in %.2fs",
                 name, version, time.monotonic() - started)
        return True

    def _unload(self, model: _Model, version: int) -> None:
        with self._lock:
            servable = model.available.pop(version, None)
            model.states[version] = VersionState(UNLOADING)
        if servable is not None:
            servable.close()  # requests holding the servable still finish
        self._set_state(model, version, VersionState(END))
        LOG.info("Unloaded servable version {name: %s version: %d}", model.settings.name, version)

    def _set_state(self, model: _Model, version: int, state: VersionState) -> None:
        with self._lock:
            model.states[version] = state

    # -- lookups -------------------------------------------------------------------------------

    def _model(self, name: str) -> Optional[_Model]:
        with self._lock:
            return self._models.get(name)

    def resolve_label(self, model_name: str, label: str) -> int:
        model = self._model(model_name)
        labels = model.settings.label_map() if model is not None else {}
        if label not in labels:
            raise errors.invalid_argument(f"Unrecognized servable version label: {label}")
        return labels[label]

    def _requested_version(self, model_name: str, version: Optional[int],
                           label: Optional[str]) -> Optional[int]:
        """The version a request names directly or through a label (None: the latest)."""
        if version is not None and label is not None:
            raise errors.invalid_argument(
                f"Both model version ({version}) and model version label ({label}) cannot "
                "be supplied.")
        return self.resolve_label(model_name, label) if label is not None else version

    def servable(self, model_name: str, version: Optional[int] = None,
                 label: Optional[str] = None) -> Servable:
        """The servable a request addresses: latest available, a version, or a label."""
        version = self._requested_version(model_name, version, label)
        model = self._model(model_name)
        with self._lock:
            available = model.available if model is not None else {}
            if version is None:
                if available:
                    return available[max(available)]
                raise errors.not_found(f"Servable not found for request: Latest({model_name})")
            servable = available.get(version)
        if servable is None:
            raise errors.not_found(
                f"Servable not found for request: Specific({model_name}, {version})")
        return servable

    def version_states(self, model_name: str, version: Optional[int] = None,
                       label: Optional[str] = None) -> Dict[int, VersionState]:
        """Version -> state for GetModelStatus (newest first), with TF Serving's errors."""
        version = self._requested_version(model_name, version, label)
        model = self._model(model_name)
        with self._lock:
            states = dict(model.states) if model is not None else {}
        if version is not None:
            if version not in states:
                raise errors.not_found(f"Could not find version {version} of model {model_name}")
            return {version: states[version]}
        if not states:
            raise errors.not_found(f"Could not find any versions of model {model_name}")
        return {v: states[v] for v in sorted(states, reverse=True)}
