"""Release a grid of pruned models (models × methods × sparsities) from a YAML manifest.

    # release.yaml
    namespace: my-lab                 # optional; default: the token's owner
    suffix: icml26                    # optional, appended to every repo name
    defaults: {seed: 42, dtype: auto, tie_policy: exact, shard_size: 5GB}     # RunSettings fields
    push: {tag: v1, gated: manual, collection: "Pruned LLMs (ICML 2026)", private: false}
    evaluation: {eval_batch_size: auto, skip: [latency]}   # measure every artifact (EvalSettings fields); {}: the
                                                            # protocol's defaults; no section: no measure stage
    models:
      - HuggingFaceTB/SmolLM2-135M-Instruct
      - {model: ./gemma.gguf, base_model_id: google/gemma-2-9b-it}          # per-model settings
    methods: [magnitude, random]
    sparsities: [0.3, 0.5]

    >>> manifest = load_manifest(Path("release.yaml"))
    >>> todo = select_shard(manifest.artifacts(), "2/4")          # CI job 2 of 4
    >>> summary = run_release(todo, run_one, published=lambda a: published_commit(api, a.repo_id(ns), a))
    >>> write_summary(Path("release-summary.json"), summary)

The grid is ordered model by model, so the artifacts of one base model run in one process one after the
other (the pipeline reuses its dense baseline). `run_one(artifact)` is given by the caller (the CLI passes
the pipeline runner); it returns an outcome with `.repo_id` and `.publish` (`.commit`, `.url`, `.changed`,
or None for a dry run). No CLI code here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .errors import HUB_UNAVAILABLE, PublishPrunedError, SettingsError, describe_read_error
from .local_paths import is_local_path, recorded_path
from .results import write_json_atomic
from .settings import RunSettings, validate_repo_id

log = logging.getLogger(__name__)

# What makes two runs produce the same published content (with the tool version).
IDENTITY_KEYS = ("model", "revision", "method", "sparsity", "tie_policy", "seed", "dtype", "base_model_id",
                 "shard_size", "structure")
# Methods that read calibration data: what they read decides the weights too (with a local file's sha256).
CALIBRATION_KEYS = ("calibration_dataset", "calibration_samples", "calibration_seq_len", "calibration_revision")
PATH_KEYS = ("model", "calibration_dataset")  # may name local paths, published relative or by name
_SETTINGS_FIELDS = {f.name for f in dataclasses.fields(RunSettings)} - {"model", "method", "sparsity"}
_PUSH_KEYS = {"branch", "create_pr", "tag", "gated", "collection", "private", "force"}
_TOP_KEYS = {"namespace", "suffix", "defaults", "push", "models", "methods", "sparsities", "evaluation"}


@dataclass(frozen=True)
class Artifact:
    """One cell of the grid: a base model, a method, a sparsity, and the settings shared by the manifest."""

    model: str
    method: str
    sparsity: float
    settings_extra: tuple[tuple[str, Any], ...] = ()  # RunSettings fields (sorted pairs, hashable)
    suffix: str | None = None
    repo: str | None = None  # an explicit repo id for this model (its name gets -<method>-s<NN> appended)

    @property
    def key(self) -> str:
        """Stable name of the artifact, e.g. ``org/m:magnitude:s50``."""
        return f"{self.model}:{self.method}:s{round(self.sparsity * 100):02d}"

    @property
    def published_key(self) -> str:
        """`key` with a local model path as results.json records it (relative to the working folder, or its name)."""
        return f"{_as_published({'model': self.model})['model']}:{self.method}:s{round(self.sparsity * 100):02d}"

    def settings(self) -> RunSettings:
        return RunSettings(model=self.model, method=self.method, sparsity=self.sparsity, **dict(self.settings_extra))

    def repo_id(self, namespace: str) -> str:
        """Where it is published: `<namespace>/<base>-<method>-s<NN>[-<NofM>][-<suffix>]`."""
        settings = self.settings()
        if self.repo:  # the model's own repo id stands in for namespace and base name
            return validate_repo_id(f"{self.repo}-{settings.variant_name(self.suffix)}")
        return validate_repo_id(settings.repo_name(namespace, self.suffix))

    def identity(self) -> dict[str, Any]:
        """The settings that decide the published content (IDENTITY_KEYS, and CALIBRATION_KEYS if it calibrates)."""
        settings = self.settings()
        data = settings.as_dict()
        identity = {key: data[key] for key in IDENTITY_KEYS}
        if settings.uses_calibration:
            identity.update({key: data[key] for key in CALIBRATION_KEYS},
                            calibration_file_sha256=settings.calibration_file_sha256())
        return _as_published(identity)


@dataclass
class Manifest:
    models: list[dict[str, Any]]
    methods: list[str]
    sparsities: list[float]
    namespace: str | None = None
    suffix: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None  # EvalSettings fields for every artifact; None: no measure stage

    def evaluation_settings(self) -> Any:
        """The measure stage's settings (`EvalSettings`) of every artifact, from the manifest's `evaluation` section
        (`evaluation: {}` measures with the protocol's defaults); None without the section: cards of sparsity only."""
        from .evaluation import EvalSettings

        if self.evaluation is None:
            return None
        data = dict(self.evaluation)
        for name in ("skip", "bbq_conditions"):  # a YAML list, or a comma string as the CLI takes it
            if name in data:
                value = data[name]
                items = value.split(",") if isinstance(value, str) else value
                data[name] = tuple(str(v).strip() for v in items if str(v).strip())
        if "skip" in data:
            data["skip"] = frozenset(data["skip"])
        if isinstance(data.get("ppl_preset_data"), dict):  # {wikitext2: file} as well as [[wikitext2, file]]
            data["ppl_preset_data"] = tuple(data["ppl_preset_data"].items())
        try:
            return EvalSettings(**data)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"manifest: 'evaluation' is not valid ({exc})") from None

    def push_options(self) -> tuple[Any, bool]:
        """(PushOptions, private) from the manifest's `push` section."""
        from .hub.publish import PushOptions

        push = dict(self.push)
        private = bool(push.pop("private", False))
        return PushOptions(**push), private

    def artifacts(self) -> list[Artifact]:
        """The whole grid, model-major, in manifest order."""
        grid = []
        for entry in self.models:
            extra = {**self.defaults, **{k: v for k, v in entry.items() if k not in ("model", "repo_id")}}
            pairs = tuple(sorted(extra.items()))
            for method in self.methods:
                for sparsity in self.sparsities:
                    grid.append(Artifact(entry["model"], method, sparsity, pairs, self.suffix, entry.get("repo_id")))
        return grid


def _list(data: dict, key: str, kinds: tuple[type, ...], what: str) -> list:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, kinds) for v in value):
        raise SettingsError(f"manifest: '{key}' must be a non-empty list of {what}")
    return value


def parse_manifest(data: Any, source: str = "manifest") -> Manifest:
    """Validate a manifest already parsed from YAML; SettingsError naming the first problem."""
    if not isinstance(data, dict):
        raise SettingsError(f"{source} must be a YAML mapping")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise SettingsError(f"{source}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})")
    models = []
    for entry in data.get("models") or []:
        entry = {"model": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise SettingsError(f"{source}: each model is an id/path or a mapping with 'model'")
        bad = sorted(set(entry) - _SETTINGS_FIELDS - {"model", "repo_id"})
        if bad:
            raise SettingsError(f"{source}: model {entry['model']}: unknown keys {', '.join(bad)}")
        if entry.get("repo_id"):
            validate_repo_id(entry["repo_id"], what=f"{source}: repo_id")
        models.append(entry)
    if not models:
        raise SettingsError(f"{source}: 'models' must list at least one model")
    sparsities = [float(s) for s in _list(data, "sparsities", (int, float), "numbers")]
    defaults = data.get("defaults") or {}
    push = data.get("push") or {}
    if not isinstance(defaults, dict) or set(defaults) - _SETTINGS_FIELDS:
        raise SettingsError(f"{source}: 'defaults' takes RunSettings fields: {', '.join(sorted(_SETTINGS_FIELDS))}")
    if not isinstance(push, dict) or set(push) - _PUSH_KEYS:
        raise SettingsError(f"{source}: 'push' takes {', '.join(sorted(_PUSH_KEYS))}")
    for key, value in push.items():
        wanted = bool if key in ("create_pr", "private", "force") else str
        if not isinstance(value, wanted):
            raise SettingsError(f"{source}: push.{key} must be {'true or false' if wanted is bool else 'text'}, "
                                f"got {value!r}")
    evaluation = data.get("evaluation")
    evaluation = {} if evaluation is None and "evaluation" in data else evaluation
    from .evaluation import EvalSettings

    eval_fields = {f.name for f in dataclasses.fields(EvalSettings)}
    if evaluation is not None and (not isinstance(evaluation, dict) or set(evaluation) - eval_fields):
        raise SettingsError(f"{source}: 'evaluation' takes the measure settings: {', '.join(sorted(eval_fields))}")
    manifest = Manifest(models=models, methods=_list(data, "methods", (str,), "method names"), sparsities=sparsities,
                        namespace=data.get("namespace"), suffix=data.get("suffix"), defaults=defaults, push=push,
                        evaluation=evaluation)
    manifest.evaluation_settings()  # validates the measure settings now rather than mid-release
    keys = [a.key for a in manifest.artifacts()]
    if len(set(keys)) != len(keys):
        raise SettingsError(f"{source}: the grid lists an artifact twice")
    for artifact in manifest.artifacts():
        artifact.settings()  # validates sparsity, dtype, ... now rather than mid-release
    return manifest


def load_manifest(path: Path) -> Manifest:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read the manifest {path}: {describe_read_error(exc)}") from None
    return parse_manifest(data, str(path))


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) as (i, n)."""
    try:
        i, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise SettingsError(f"--shard must look like 2/4, got {spec!r}") from None
    if not 1 <= i <= n:
        raise SettingsError(f"--shard {spec}: need 1 <= i <= n")
    return i, n


def select_shard(artifacts: list[Artifact], spec: str | None) -> list[Artifact]:
    """Shard i of n: the i-th of n contiguous, balanced slices of the grid (deterministic, order kept)."""
    if not spec:
        return list(artifacts)
    i, n = parse_shard(spec)
    start, end = (i - 1) * len(artifacts) // n, i * len(artifacts) // n
    return artifacts[start:end]


@dataclass
class ArtifactResult:
    key: str
    model: str
    method: str
    sparsity: float
    status: str  # published | unchanged | skipped | dry-run | planned | failed
    repo_id: str | None = None
    commit: str | None = None
    url: str | None = None
    error: str | None = None
    unavailable: bool = False  # failed because the Hub or the network was unavailable (retry later)
    seconds: float = 0.0
    plan: str | None = None  # status "planned": the config-only plan shown instead of a build (`--preview`)


@dataclass
class ReleaseSummary:
    shard: str | None
    artifacts: list[ArtifactResult]

    @property
    def ok(self) -> bool:
        return all(a.status != "failed" for a in self.artifacts)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed; HUB_UNAVAILABLE when every failure was the Hub or the network being
        unavailable (re-run later: finished artifacts are skipped); else 3."""
        failed = [a for a in self.artifacts if a.status == "failed"]
        return 0 if not failed else HUB_UNAVAILABLE if all(a.unavailable for a in failed) else 3

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.artifacts:
            out[a.status] = out.get(a.status, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"shard": self.shard, "ok": self.ok, "counts": self.counts(),
                "artifacts": [dataclasses.asdict(a) for a in self.artifacts]}


def run_release(artifacts: Iterable[Artifact], run_one: Callable[[Artifact], Any], *,
                published: Callable[[Artifact], tuple[str, str] | None] | None = None, shard: str | None = None,
                keep_going: bool = True, on_result: Callable[[ArtifactResult], None] | None = None) -> ReleaseSummary:
    """Run each artifact in order; skip those `published(artifact)` reports as on the Hub (repo_id, commit).

    A failing artifact is recorded and the next one runs (`keep_going`); errors of publish-pruned are kept as
    their one-line message, anything else as its type and message.
    """
    results = []
    for artifact in artifacts:
        started = time.monotonic()
        base = {"key": artifact.key, "model": artifact.model, "method": artifact.method,
                "sparsity": artifact.sparsity}
        try:
            found = published(artifact) if published else None
            if found is not None:
                result = ArtifactResult(**base, status="skipped", repo_id=found[0], commit=found[1])
            else:
                result = _result_from_outcome(base, run_one(artifact))
        except (PublishPrunedError, Exception) as exc:
            from .hub.retry import hub_unavailable

            message = str(exc) if isinstance(exc, PublishPrunedError) else f"{type(exc).__name__}: {exc}"
            result = ArtifactResult(**base, status="failed", error=message.splitlines()[0][:500] if message else "",
                                    unavailable=hub_unavailable(exc))
            log.error("%s failed: %s", artifact.key, result.error)
            if not keep_going:
                results.append(result)
                break
        result.seconds = round(time.monotonic() - started, 3)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return ReleaseSummary(shard, results)


@dataclass
class Planned:
    """What `run_one` returns for an artifact too big to build on this machine in a preview: its plan."""

    repo_id: str
    text: str


def fits_here(weights_bytes: int, device: str) -> tuple[bool, str]:
    """Whether a model of `weights_bytes` can be pruned and measured on this machine: twice its weights (a bfloat16
    model is decoded in float32 for SRS) within the device's free memory, three times within free disk (the base,
    the pruned copy, the dense copy the latency stage reads)."""
    import shutil

    import torch

    from .measure.precision import free_bytes  # the same reading the float32 upcast relies on

    free = free_bytes(torch.device(device))
    disk = shutil.disk_usage(".").free
    if free is not None and free < 2 * weights_bytes:
        return False, f"needs ≈ {2 * weights_bytes / 2**30:.0f} GiB of {device} memory, {free / 2**30:.0f} GiB free"
    if disk < 3 * weights_bytes:
        return False, f"needs ≈ {3 * weights_bytes / 2**30:.0f} GiB of disk, {disk / 2**30:.0f} GiB free"
    return True, ""


def _result_from_outcome(base: dict[str, Any], outcome: Any) -> ArtifactResult:
    if isinstance(outcome, Planned):
        return ArtifactResult(**base, status="planned", repo_id=outcome.repo_id, plan=outcome.text)
    publish = getattr(outcome, "publish", None)
    repo_id = getattr(outcome, "repo_id", None)
    if publish is None:
        return ArtifactResult(**base, status="dry-run", repo_id=repo_id)
    status = "published" if publish.changed else "unchanged"
    return ArtifactResult(**base, status=status, repo_id=repo_id, commit=publish.commit, url=publish.url)


def write_summary(path: Path, summary: ReleaseSummary) -> None:
    """The JSON summary (atomically written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, summary.to_json())


def published_commit(api: Any, repo_id: str, artifact: Artifact, tool_version: str = __version__, *,
                     base: str | None = None, calibration_moved: Callable[[str], bool] | None = None,
                     revision: str | None = None) -> str | None:
    """The commit of `repo_id` (at branch `revision`, default main) if it holds this artifact, complete, made
    by this tool version.

    "Identical" means: a publish-pruned card; a results.json whose settings match `artifact.identity()`, whose
    base model was pinned to `base` (the Hub commit or local content sha256 `resolve_source` gives; given by
    callers that can resolve it, since a model id or path says nothing of the bytes behind it) and whose tool
    version is `tool_version`; whose Hub calibration dataset, given `calibration_moved` (called with the
    commit the published run calibrated on), did not move since; and every checkpoint file it lists present
    with the same size and sha256.
    """
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    from .hub.remote import inspect_remote, is_publish_pruned_card, remote_sha256

    try:
        head = api.repo_info(repo_id, revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None
    remote = inspect_remote(api, repo_id, head)
    data = remote.results or {}
    if not remote.card or not is_publish_pruned_card(remote.card) or not data:
        return None
    wanted = artifact.identity()
    if _published_identity(data, wanted) != wanted:
        return None
    source = data.get("source") or {}
    if base is not None and (source.get("revision") or source.get("content_sha256")) != base:
        return None
    if (data.get("tool") or {}).get("version") != tool_version:
        return None
    used = ((data.get("pruning") or {}).get("calibration") or {}).get("revision")
    if calibration_moved is not None and used and calibration_moved(used):
        return None
    for name, digest in (data.get("files") or {}).items():
        entry = remote.files.get(name)
        if entry is None or entry.size != digest.get("size"):
            return None
        content = entry.lfs.sha256 if entry.lfs is not None else remote_sha256(api, repo_id, name, head)
        if content != digest.get("sha256"):  # non-LFS files are small (config, tokenizer): read them
            return None
    return head


def _published_identity(results: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The same keys as `Artifact.identity()`, read from a published results.json."""
    settings = results.get("settings") or {}
    calibration = (results.get("pruning") or {}).get("calibration") or {}
    return _as_published({key: calibration.get("file_sha256") if key == "calibration_file_sha256" else
                          settings.get(key) for key in keys})


def _as_published(identity: dict[str, Any]) -> dict[str, Any]:
    """Local paths (the base model, a calibration file) as results.json records them (`local_paths`): relative
    to the working folder or by name, their bytes compared through the base pin and the file's sha256. Applied
    to both sides, so results written with absolute paths by older versions still match."""
    return {key: recorded_path(value) if key in PATH_KEYS and isinstance(value, str)
            and (is_local_path(value) or Path(value).exists()) else value for key, value in identity.items()}


def summary_lines(summary: ReleaseSummary) -> list[str]:
    """Human-readable lines, one per artifact, then the counts."""
    lines = []
    for a in summary.artifacts:
        lines.append(f"{a.status:<10} {a.key:<60} {a.repo_id or ''} {(a.commit or '')[:12]} {a.error or ''}".rstrip())
        lines += [f"    {line}" for line in (a.plan or "").splitlines()]
    lines.append("release: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.counts().items())))
    return lines
