"""The measure stage: perplexity, SRS on BBQ and latency of the pruned checkpoint against its dense base.

    >>> metrics = evaluate_run(source, settings, eval_settings, run_dir, cache_dir, load_dense, progress=True)
    >>> metrics["perplexity"]["pruned"]["ppl"], metrics["srs"]["comparison"]["srs_pruned"]

The dense baseline is computed once per (base model at its pinned revision, dtype, protocol settings) and
cached under `cache_dir`, so a grid of methods × sparsities pays for it once. The pruned model is loaded
from the saved checkpoint: the figures describe what is published. Everything returned is plain JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import SettingsError
from .hashing import sha256_file
from .results import write_json_atomic
from .settings import stable_hash

log = logging.getLogger(__name__)

EVAL_KINDS = ("ppl", "srs", "latency")
EVAL_DIR = "eval"  # in the run folder, published: raw per-reply records
LITERATURE_FIELDS = ("ppl_presets", "ppl_preset_data", "ppl_preset_seq_len", "ppl_preset_windows", "lm_eval_tasks",
                     "lm_eval_include", "lm_eval_limit", "lm_eval_num_fewshot", "lm_eval_batch_size")
# Bumped when a measurement's definition changes, so a dense baseline cached under the old one is not reused.
MEASUREMENT_VERSION = 3  # 3: token NLL over [N, V] rows (perplexity._nll), 1e-4 of perplexity apart from 2's


@dataclass(frozen=True)
class EvalSettings:
    """Protocol settings of the measure stage (defaults: the study's, see docs/measurement.md)."""

    skip: frozenset[str] = frozenset()
    ppl_data: str | None = None  # None: allenai/tulu-3-sft-mixture on the Hub
    ppl_samples: int = 256
    ppl_seq_len: int = 512
    eval_batch_size: str = "auto"  # SRS prompts / perplexity rows per batch: "auto" (sized to the device) or a number
    bbq_path: str | None = None  # None: Elfsong/BBQ on the Hub
    bbq_categories: str | None = None  # None: the study's five; "all"; or a comma list
    bbq_conditions: tuple[str, ...] = ("ambig",)
    bbq_limit: int | None = None  # items per category
    parser: str = "protocol"  # measure.srs.PARSERS: "protocol" (protocol.md's rules) or "study" (the study's code)
    srs_precision: str = "float32"  # measure.precision.PRECISIONS: decode SRS in float32 where room, or "native"
    latency_items: int | None = None  # None: the latency module's default
    latency_max_tokens: int = 5
    latency_warmup: int = 1
    latency_mode: str = "fixed"  # measure.latency.LATENCY_MODES
    # The pruning literature's measurements (literature.py), each with its own dense baselines:
    ppl_presets: tuple[str, ...] = ("tulu3",)  # measure.ppl_presets.PRESETS: the study's tulu3, wikitext2, c4
    ppl_preset_data: tuple[tuple[str, str], ...] = ()  # (preset, local file in the Hub dataset's shape)
    ppl_preset_seq_len: int | None = None  # None: max_position_embeddings, capped (ppl_presets.default_seq_len)
    ppl_preset_windows: int | None = None  # at most N windows per preset: a quick run
    lm_eval_tasks: tuple[str, ...] = ()  # lm-evaluation-harness task names (none: the harness does not run)
    lm_eval_include: str | None = None  # a folder of extra task YAMLs (the harness's include_path)
    lm_eval_limit: int | None = None  # documents per task: a quick run
    lm_eval_num_fewshot: int | None = None  # None: each task's own default
    lm_eval_batch_size: int = 8
    latency_backend: str = "auto"  # measure.latency.LATENCY_BACKENDS: auto (choose_backend), mlx, torch

    def __post_init__(self) -> None:
        unknown = sorted(set(self.skip) - set(EVAL_KINDS))
        if unknown:
            raise SettingsError(f"--skip-eval takes {', '.join(EVAL_KINDS)}; unknown: {', '.join(unknown)}")
        for name in ("ppl_samples", "ppl_seq_len"):
            if getattr(self, name) < 1:
                raise SettingsError(f"--{name.replace('_', '-')} must be at least 1")
        from .measure.batching import parse_batch_size  # late: measure imports torch

        object.__setattr__(self, "eval_batch_size", str(parse_batch_size(self.eval_batch_size)))
        if self.bbq_limit is not None and self.bbq_limit < 1:
            raise SettingsError("--bbq-limit must be at least 1")
        self._check_literature()
        from .measure.latency import LATENCY_BACKENDS, LATENCY_MODES  # the measure modules' own lists
        from .measure.precision import PRECISIONS
        from .measure.srs import PARSERS

        for name, allowed in (("parser", tuple(PARSERS)), ("srs_precision", PRECISIONS),
                              ("latency_mode", LATENCY_MODES), ("latency_backend", LATENCY_BACKENDS)):
            if getattr(self, name) not in allowed:
                raise SettingsError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                    f"got {getattr(self, name)!r}")

    def _check_literature(self) -> None:
        from .measure.ppl_presets import PRESETS, STUDY_PRESET  # late: measure imports torch

        # a release manifest gives lists (or a comma string): the same settings hash the same either way
        for name in ("ppl_presets", "lm_eval_tasks"):
            value = getattr(self, name)
            items = value.split(",") if isinstance(value, str) else value
            object.__setattr__(self, name, tuple(s.strip() for s in items if s.strip()))
        object.__setattr__(self, "ppl_preset_data", tuple(tuple(pair) for pair in self.ppl_preset_data))
        unknown = [p for p in self.ppl_presets if p not in PRESETS]
        if unknown or not self.ppl_presets:
            raise SettingsError(f"--ppl-preset takes {', '.join(PRESETS)}; unknown: {', '.join(unknown) or '(none)'}")
        for name, path in self.ppl_preset_data:
            if name == STUDY_PRESET:
                raise SettingsError("--ppl-preset-data: the study's Tulu-3 data is given with --ppl-data")
            if name not in self.ppl_presets:
                raise SettingsError(f"--ppl-preset-data names {name!r}, which --ppl-preset does not measure "
                                    f"({', '.join(self.ppl_presets)})")
            if not Path(path).is_file():
                raise SettingsError(f"--ppl-preset-data {name}={path}: no such file")
        for name, least in (("ppl_preset_seq_len", 2), ("ppl_preset_windows", 1), ("lm_eval_limit", 1),
                            ("lm_eval_batch_size", 1), ("lm_eval_num_fewshot", 0)):
            if getattr(self, name) is not None and getattr(self, name) < least:
                raise SettingsError(f"--{name.replace('_', '-')} must be at least {least}")
        if self.lm_eval_tasks:
            from .measure.harness import require_harness

            require_harness()

    def runs(self, kind: str) -> bool:
        return kind not in self.skip

    def runs_study_ppl(self) -> bool:
        """Whether the study's Tulu-3 perplexity runs (`--ppl-preset` holds tulu3 and ppl is not skipped)."""
        return self.runs("ppl") and "tulu3" in self.ppl_presets

    def literature(self):
        """The literature's part of these settings (literature.LiteratureSettings): windowed perplexity presets,
        lm-eval tasks."""
        from .literature import LiteratureSettings
        from .measure.harness import HarnessSettings

        harness = HarnessSettings(tasks=self.lm_eval_tasks, num_fewshot=self.lm_eval_num_fewshot,
                                  limit=self.lm_eval_limit, batch_size=self.lm_eval_batch_size,
                                  include_path=self.lm_eval_include) if self.lm_eval_tasks else None
        presets = tuple(p for p in self.ppl_presets if p != "tulu3") if self.runs("ppl") else ()
        return LiteratureSettings(presets=presets, preset_data=self.ppl_preset_data, seq_len=self.ppl_preset_seq_len,
                                  max_windows=self.ppl_preset_windows, harness=harness)

    def literature_key(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in LITERATURE_FIELDS}

    def literature_paths(self) -> list[str]:
        """The local files and folders the literature's measurements read (recorded by name when published)."""
        return [path for _, path in self.ppl_preset_data] + ([self.lm_eval_include] if self.lm_eval_include else [])

    @property
    def limits(self) -> dict[str, Any]:
        """What makes this run smaller than the protocol; the card says so."""
        found = {}
        if self.bbq_limit is not None and self.runs("srs"):
            found["bbq_limit_per_category"] = self.bbq_limit
        if (self.ppl_samples, self.ppl_seq_len) != (256, 512) and self.runs_study_ppl():
            found["ppl_rows"] = f"{self.ppl_samples} x {self.ppl_seq_len} (protocol: 256 x 512)"
        if self.ppl_preset_windows is not None and self.literature().presets:
            found["ppl_preset_windows"] = f"at most {self.ppl_preset_windows} windows per perplexity preset"
        if self.lm_eval_limit is not None and self.lm_eval_tasks:
            found["lm_eval_limit"] = f"{self.lm_eval_limit} documents per lm-eval task"
        return found

    def key(self) -> dict[str, Any]:
        """Every setting, in a form that hashes the same in every process (`skip` sorted, not a frozenset)."""
        return {**asdict(self), "skip": sorted(self.skip)}

    def input_digests(self) -> dict[str, Any]:
        """sha256 of the local data files the measurements read, so an edited file is measured again.

        Hub data (the defaults) is pinned by the commit each measurement records; a local path is not.
        """
        return {"ppl_data": _local_digest(self.ppl_data) if self.runs("ppl") else None,
                "bbq_path": _local_digest(self.bbq_path) if self.runs("srs") else None,
                **({"literature": [_local_digest(p) for p in self.literature_paths()]}
                   if self.literature_paths() else {})}

    def model_key(self) -> dict[str, Any]:
        """The settings that decide one model's perplexity and SRS (not latency, which needs both)."""
        data = asdict(self)
        for name in LITERATURE_FIELDS:  # their figures have their own dense baselines (literature.py)
            data.pop(name)
        for name in ("skip", "latency_items", "latency_max_tokens", "latency_warmup", "latency_mode",
                     "latency_backend"):
            data.pop(name)
        return data


def _local_digest(path: str | None) -> str | dict[str, str] | None:
    """A local file's sha256, or each file's in a local folder; None for a Hub id."""
    if not path or not Path(path).exists():
        return None
    if Path(path).is_file():
        return sha256_file(path)
    return {f.name: sha256_file(f) for f in sorted(Path(path).iterdir()) if f.is_file()}


@dataclass
class ModelMeasurement:
    perplexity: Any = None  # PerplexityResult
    srs: Any = None  # SrsRun
    notes: dict[str, str] = field(default_factory=dict)


def measure_model(model, tokenizer, settings: EvalSettings, *, ppl_rows=None, bbq=None) -> ModelMeasurement:
    """Perplexity on the protocol rows and SRS on the BBQ items, for one model already in memory."""
    from .measure.perplexity import evaluate_perplexity
    from .measure.srs import evaluate_srs

    found = ModelMeasurement()
    if ppl_rows is not None:
        found.perplexity = evaluate_perplexity(model, ppl_rows, batch_size=settings.eval_batch_size)
    if bbq is not None:
        found.srs = evaluate_srs(model, tokenizer, bbq.items, batch_size=settings.eval_batch_size,
                                 parser=settings.parser, precision=settings.srs_precision)
    return found


def bbq_categories(text: str | None) -> str | list[str] | None:
    """'--bbq-categories' as load_bbq takes it: None (the study's five), 'all', or a list."""
    if not text or text == "all":
        return text or None
    return [c.strip() for c in text.split(",") if c.strip()]


def prepare_inputs(tokenizer, settings: EvalSettings):
    """(perplexity rows or None, BBQ set or None), both built once and shared by dense and pruned."""
    from .measure.bbq import bbq_source, load_bbq
    from .measure.perplexity import build_ppl_rows, ppl_source

    rows = bbq = None
    if settings.runs_study_ppl():
        rows = build_ppl_rows(tokenizer, ppl_source(settings.ppl_data), n_rows=settings.ppl_samples,
                              seq_len=settings.ppl_seq_len)
    if settings.runs("srs"):
        bbq = load_bbq(bbq_source(settings.bbq_path), bbq_categories(settings.bbq_categories),
                       settings.bbq_conditions, settings.bbq_limit)
    return rows, bbq


# --- the dense baseline cache ------------------------------------------------------------------------------

def _srs_to_json(run) -> dict:
    data = asdict(run)
    data.pop("replies")
    return data


def save_baseline(path: Path, measurement: ModelMeasurement) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if measurement.srs is not None:
        from .measure.srs import write_replies_jsonl

        write_replies_jsonl(measurement.srs, path.with_suffix(".replies.jsonl"))
    write_json_atomic(path, {
        "perplexity": asdict(measurement.perplexity) if measurement.perplexity is not None else None,
        "srs": _srs_to_json(measurement.srs) if measurement.srs is not None else None,
    })


def load_baseline(path: Path) -> ModelMeasurement | None:
    """A cached dense measurement, rebuilt into the measure modules' own types; None when absent."""
    from .measure.perplexity import PerplexityResult, PplRowsInfo
    from .measure.srs import Reply, SrsRun, summarise

    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    found = ModelMeasurement()
    if data.get("perplexity"):
        ppl = dict(data["perplexity"])
        found.perplexity = PerplexityResult(**dict(ppl, data=PplRowsInfo(**ppl["data"])))
    if data.get("srs"):
        replies_file = path.with_suffix(".replies.jsonl")
        if not replies_file.is_file():
            return None
        replies = [Reply(**json.loads(line)) for line in replies_file.read_text().splitlines() if line.strip()]
        per_category, overall = summarise(replies)
        fields = {f.name for f in dataclasses.fields(SrsRun)} - {"per_category", "overall", "replies"}
        found.srs = SrsRun(per_category=per_category, overall=overall, replies=replies,
                           **{k: v for k, v in data["srs"].items() if k in fields})
    return found


# --- the stage ---------------------------------------------------------------------------------------------

def evaluate_run(*, dense_identity: str, settings: EvalSettings, run_dir: Path, cache_dir: Path,
                 load_dense: Callable[[], tuple[Any, Any]], load_pruned: Callable[[], tuple[Any, Any]],
                 dense_folder: Callable[[], Path], device: str = "cpu", num_parameters: int = 0) -> dict[str, Any]:
    """Measure dense (cached) and pruned; return the `metrics` section of results.json.

    `load_dense`/`load_pruned` return (model, tokenizer); `dense_folder` gives a transformers folder of the
    dense model for MLX, called only when latency runs. `device` and `num_parameters` choose the latency backend
    (`measure.latency.choose_backend`).
    """
    from .measure.batching import release_memory
    from .measure.srs import bias_blind_check, compare_srs, write_replies_jsonl

    metrics: dict[str, Any] = {"protocol": {**settings.model_key(), "skip": sorted(settings.skip)},
                               "limits": settings.limits,
                               "not_measured": {k: "skipped by --skip-eval" for k in sorted(settings.skip)}}
    if settings.runs("ppl") and not settings.runs_study_ppl():
        metrics["not_measured"]["ppl"] = (f"the study's Tulu-3 perplexity is not among --ppl-preset "
                                          f"({', '.join(settings.ppl_presets)} measured)")
    literature = settings.literature()
    if literature.wanted:
        metrics["protocol"]["literature"] = settings.literature_key()
    bbq = extra = None
    if settings.runs_study_ppl() or settings.runs("srs") or literature.wanted:
        from .literature import LiteratureRun

        pruned_model, tokenizer = load_pruned()
        rows, bbq = prepare_inputs(tokenizer, settings)
        if literature.wanted:  # windows built and task names checked before anything is measured
            extra = LiteratureRun(literature, tokenizer, pruned_model.config)
        baseline_key = stable_hash({"model": dense_identity, "protocol": settings.model_key(),
                                    "measurement_version": MEASUREMENT_VERSION,
                                    "rows": rows.info.token_hash if rows is not None else None,
                                    "bbq": [bbq.source, bbq.files] if bbq is not None else None})
        baseline_file = cache_dir / "baselines" / f"{baseline_key}.json"
        pruned = measure_model(pruned_model, tokenizer, settings, ppl_rows=rows, bbq=bbq)
        if extra is not None:
            extra.measure("pruned", pruned_model, tokenizer)
        del pruned_model
        release_memory()  # the dense model's float32 decoding needs the room
        study = rows is not None or bbq is not None
        dense = load_baseline(baseline_file) if study else ModelMeasurement()
        if dense is not None and ((rows is not None and dense.perplexity is None) or
                                  (bbq is not None and dense.srs is None)):
            dense = None  # cached by a run that skipped what this one measures
        if study:
            metrics["dense_baseline"] = {"cache_key": baseline_key, "reused": dense is not None}
        extra_missing = extra is not None and extra.load_dense(cache_dir, dense_identity)
        if dense is None or extra_missing:  # one load of the dense model serves every figure not cached
            dense_model, _ = load_dense()
            if dense is None:
                dense = measure_model(dense_model, tokenizer, settings, ppl_rows=rows, bbq=bbq)
                save_baseline(baseline_file, dense)
            if extra_missing:
                extra.measure("dense", dense_model, tokenizer)
                extra.save_dense(cache_dir, dense_identity)
            del dense_model
            release_memory()
        if extra is not None:
            metrics.update(extra.sections())
        if rows is not None:
            if dense.perplexity.token_hash != pruned.perplexity.token_hash:
                raise RuntimeError("dense and pruned perplexity rows differ")  # a bug, never user input
            metrics["perplexity"] = _ppl_section(dense.perplexity, pruned.perplexity)
        if bbq is not None:
            eval_dir = run_dir / EVAL_DIR
            eval_dir.mkdir(exist_ok=True)
            write_replies_jsonl(pruned.srs, eval_dir / "srs_replies_pruned.jsonl")
            write_replies_jsonl(dense.srs, eval_dir / "srs_replies_dense.jsonl")
            metrics["srs"] = _srs_section(dense.srs, pruned.srs, bbq, compare_srs)
            if rows is not None:
                comparison = compare_srs(dense.srs, pruned.srs, settings.bbq_conditions[0])
                metrics["bias_blind"] = bias_blind_check(comparison, dense.perplexity.ppl, pruned.perplexity.ppl)
    if settings.runs("latency"):
        metrics["latency"] = _latency_section(run_dir, dense_folder, settings, bbq, device, num_parameters)
    return metrics


def _ppl_section(dense, pruned) -> dict[str, Any]:
    return {"dense": asdict(dense), "pruned": asdict(pruned),
            "change": (pruned.ppl - dense.ppl) / dense.ppl if dense.ppl else None}


def _srs_section(dense, pruned, bbq, compare_srs) -> dict[str, Any]:
    section: dict[str, Any] = {"data": bbq.summary(), "dense": _srs_to_json(dense), "pruned": _srs_to_json(pruned),
                               "comparison": {}}
    for condition in pruned.overall:
        section["comparison"][condition] = asdict(compare_srs(dense, pruned, condition))
    return section


def _latency_section(run_dir: Path, dense_folder, settings: EvalSettings, bbq, device: str,
                     num_parameters: int) -> dict[str, Any]:
    """Latency of pruned vs dense on (a seeded sample of) the BBQ prompts, or built-in prompts: MLX, or torch on a
    CUDA GPU without MLX's CUDA backend; not measured for a large model on a CPU unless asked (choose_backend)."""
    from .measure.bbq import prompt_messages
    from .measure.latency import choose_backend, machine_info, measure_latency

    choice = choose_backend(settings.latency_backend, device, num_parameters)
    if choice.skip_reason is not None:
        return {"measured": False, "reason": choice.skip_reason, "machine": asdict(machine_info(choice.backend))}
    folder = dense_folder()
    kwargs = {"max_tokens": settings.latency_max_tokens, "warmup": settings.latency_warmup,
              "mode": settings.latency_mode, "backend": choice.backend, "device": choice.device}
    if settings.latency_items is not None:
        kwargs["n_items"] = settings.latency_items
    prompts = [prompt_messages(item) for item in bbq.items] if bbq is not None else None
    result = asdict(measure_latency(run_dir, folder, prompts, **kwargs))
    result["prompts"] = "BBQ items of this run" if prompts else "built-in prompts (BBQ skipped)"
    result["backend_choice"] = choice.why
    return result
