"""The literature's measurements in the measure stage: WikiText-2/C4 perplexity with the papers' protocol and
zero-shot tasks through lm-evaluation-harness, dense vs pruned, each dense figure cached on its own.

    >>> run = LiteratureRun(settings.literature(), tokenizer, pruned_model.config)   # windows built, tasks checked
    >>> run.measure("pruned", pruned_model, tokenizer)
    >>> if run.load_dense(cache_dir, dense_identity):                              # what the cache does not hold
    ...     run.measure("dense", dense_model, tokenizer); run.save_dense(cache_dir)
    >>> metrics |= run.sections()        # {"perplexity_presets": {...}, "lm_eval": {...}}

Each dense figure is one cache entry keyed by what decides it: a preset's by the base model, the preset, seqlen,
the window count and the windows' token hash; a task's by the base model, the harness version, the task, its
version and definition, n-shot, limit and batch size. A hit is checked against those fields again, so a cached
figure never stands in for another preset, sequence length or harness version. `tulu3` (the study's perplexity)
stays with the study's own baseline in evaluation.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .measure.harness import RECORD_VERSION, HarnessSettings, check_tasks, harness_version, run_tasks
from .measure.perplexity import PerplexityResult, PplRows, evaluate_perplexity
from .measure.ppl_presets import PRESETS, build_windows, default_seq_len, preset_source, window_batch
from .results import write_json_atomic
from .settings import stable_hash

PRESET_VERSION = 1  # bumped when a preset's definition changes, so a dense figure cached under the old one is redone
BASELINE_DIR = "baselines"


@dataclass(frozen=True)
class LiteratureSettings:
    """The literature's part of the measure stage's settings (EvalSettings.literature())."""

    presets: tuple[str, ...] = ()  # windowed presets only (wikitext2, c4); tulu3 is the study's
    preset_data: tuple[tuple[str, str], ...] = ()  # (preset, local file)
    seq_len: int | None = None  # None: max_position_embeddings, capped
    max_windows: int | None = None  # a quick run
    harness: HarnessSettings | None = None  # None: no lm-eval tasks

    @property
    def wanted(self) -> bool:
        return bool(self.presets or self.harness)


class LiteratureRun:
    """The preset windows (built once, shared by both models) and every figure measured for them."""

    def __init__(self, settings: LiteratureSettings, tokenizer: Any, config: Any) -> None:
        self.settings = settings
        data = dict(settings.preset_data)
        seq_len, rule = default_seq_len(config, settings.seq_len)
        self.windows: dict[str, PplRows] = {
            name: build_windows(tokenizer, PRESETS[name], preset_source(PRESETS[name], data.get(name)), seq_len,
                                seq_len_rule=rule, max_windows=settings.max_windows)
            for name in settings.presets}
        if settings.harness is not None:
            check_tasks(settings.harness)
        self.ppl: dict[str, dict[str, PerplexityResult]] = {}  # role → preset → result
        self.tasks: dict[str, dict[str, dict[str, Any]]] = {}  # role → task → record
        self.harness: dict[str, Any] | None = None
        self.reused: dict[str, bool] = {}  # cache key → whether the dense figure came from the cache
        self.keys: dict[tuple[str, str], str] = {}  # (kind, name) → cache key of its dense figure

    def measure(self, role: str, model: Any, tokenizer: Any) -> None:
        """Measure `model` ("pruned", "dense" or "model") on what it lacks: for "dense", only what the cache did
        not hold."""
        done_ppl = self.ppl.setdefault(role, {})
        for name, rows in self.windows.items():
            if name not in done_ppl:
                done_ppl[name] = evaluate_perplexity(model, rows, batch_size=window_batch(rows.info.seq_len))
        harness = self.settings.harness
        done_tasks = self.tasks.setdefault(role, {})
        # the dense model runs the leaf tasks the pruned run reported (a group name expands to them)
        wanted = tuple(self.tasks.get("pruned", {})) if role == "dense" else (harness.tasks if harness else ())
        missing = tuple(t for t in wanted if t not in done_tasks)
        if harness is not None and missing:
            found = run_tasks(model, tokenizer, HarnessSettings(**{**asdict(harness), "tasks": missing}))
            self.harness = self.harness or found["harness"]
            done_tasks.update(found["tasks"])

    # --- the dense figures' cache ------------------------------------------------------------------------------

    def _preset_fields(self, dense_identity: str, name: str) -> dict[str, Any]:
        info = self.windows[name].info
        return {"kind": "ppl_preset", "model": dense_identity, "preset": name, "seq_len": info.seq_len,
                "windows": info.windows, "token_hash": info.token_hash, "batch": window_batch(info.seq_len),
                "version": PRESET_VERSION}

    def _task_fields(self, dense_identity: str, record: dict[str, Any]) -> dict[str, Any]:
        harness = self.settings.harness
        return {"kind": "lm_eval_task", "model": dense_identity, "harness": harness_version(), "task": record["task"],
                "task_version": record["version"], "config": record["config_digest"], "n_shot": record["n_shot"],
                "limit": record["limit"], "batch_size": harness.batch_size if harness else None,
                "version": RECORD_VERSION}

    def _entries(self, dense_identity: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(kind, name, key fields) of every dense figure this run needs; tasks keyed by the pruned run's records."""
        entries = [("ppl", name, self._preset_fields(dense_identity, name)) for name in self.windows]
        entries += [("task", task, self._task_fields(dense_identity, record))
                    for task, record in self.tasks.get("pruned", {}).items()]
        return entries

    def load_dense(self, cache_dir: Path, dense_identity: str) -> bool:
        """Fill the dense figures from the cache; True when some must still be measured."""
        missing = False
        for kind, name, fields in self._entries(dense_identity):
            key = stable_hash(fields)
            self.keys[(kind, name)] = key
            cached = _read(cache_dir / BASELINE_DIR / f"{key}.json", fields)
            self.reused[key] = cached is not None
            if cached is None:
                missing = True
            elif kind == "ppl":
                self.ppl.setdefault("dense", {})[name] = _ppl_result(cached)
            else:
                self.tasks.setdefault("dense", {})[name] = cached
        return missing

    def save_dense(self, cache_dir: Path, dense_identity: str) -> None:
        for kind, name, fields in self._entries(dense_identity):
            key = self.keys[(kind, name)]
            if not self.reused[key]:
                (cache_dir / BASELINE_DIR).mkdir(parents=True, exist_ok=True)
                value = asdict(self.ppl["dense"][name]) if kind == "ppl" else self.tasks["dense"][name]
                write_json_atomic(cache_dir / BASELINE_DIR / f"{key}.json", {"fields": fields, "value": value})

    # --- results.json ---------------------------------------------------------------------------------------

    def sections(self) -> dict[str, Any]:
        """`perplexity_presets` and `lm_eval` for results.json: pruned vs dense (or one model's, for `eval`)."""
        found: dict[str, Any] = {}
        keys = self.keys
        if self.windows:
            found["perplexity_presets"] = {name: _preset_section(name, self.ppl, keys.get(("ppl", name)), self.reused)
                                           for name in self.windows}
        if self.settings.harness is not None and self.harness is not None:
            tasks = {task: _task_section(task, self.tasks, keys.get(("task", task)), self.reused)
                     for task in next(iter(self.tasks.values()))}
            found["lm_eval"] = {"harness": self.harness, "tasks": tasks}
        return found


def _read(path: Path, fields: dict[str, Any]) -> Any:
    """A cached dense figure, only when stored under exactly these key fields."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data.get("value") if data.get("fields") == json.loads(json.dumps(fields)) else None


def _ppl_result(data: dict[str, Any]) -> PerplexityResult:
    from .measure.ppl_presets import PresetRowsInfo

    return PerplexityResult(**dict(data, data=PresetRowsInfo(**data["data"])))


def _baseline(key: str | None, reused: dict[str, bool]) -> dict[str, Any] | None:
    return {"cache_key": key, "reused": reused.get(key, False)} if key else None


def _preset_section(name: str, ppl: dict[str, dict[str, PerplexityResult]], key: str | None,
                    reused: dict[str, bool]) -> dict[str, Any]:
    preset = PRESETS[name]
    section: dict[str, Any] = {"preset": {"name": name, "title": preset.title, "follows": preset.follows,
                                          "dataset": preset.dataset, "config": preset.config, "split": preset.split}}
    for role, results in ppl.items():
        section[role] = asdict(results[name])
    if "pruned" in section and "dense" in section:
        dense = section["dense"]["ppl"]
        section["change"] = (section["pruned"]["ppl"] - dense) / dense if dense else None
        section["dense_baseline"] = _baseline(key, reused)
    return section


def _task_section(task: str, tasks: dict[str, dict[str, dict[str, Any]]], key: str | None,
                  reused: dict[str, bool]) -> dict[str, Any]:
    first = next(iter(tasks.values()))[task]
    section = {k: v for k, v in first.items() if k != "metrics"}
    section["metrics"] = {}
    for metric in first["metrics"]:
        entry: dict[str, Any] = {}
        for role, records in tasks.items():
            score = records[task]["metrics"].get(metric) or {}
            entry[role] = {"value": score.get("value"), "stderr": score.get("stderr")}
            entry.setdefault("filter", score.get("filter"))
            entry.setdefault("higher_is_better", score.get("higher_is_better"))
        if "pruned" in entry and "dense" in entry and None not in (entry["pruned"]["value"], entry["dense"]["value"]):
            entry["difference"] = entry["pruned"]["value"] - entry["dense"]["value"]
        section["metrics"][metric] = entry
    if "dense" in tasks:
        section["dense_baseline"] = _baseline(key, reused)
    return section
