"""Zero-shot tasks through lm-evaluation-harness, run as a library on a model already in memory.

    >>> run = run_tasks(model, tokenizer, HarnessSettings(tasks=WANDA_TASKS))
    >>> run["tasks"]["boolq"]["metrics"]["acc"]      # the harness's own figure, as it reported it
    {'value': 0.7783, 'stderr': 0.0073, 'filter': 'none', 'higher_is_better': True}

The harness does the work: its task definitions (or a user's YAML under `include_path`), its prompts, its metrics
and stderr (`lm_eval.simple_evaluate` on `HFLM(pretrained=model)`); nothing here re-implements a task. What is kept
is plain JSON: the harness and task versions, n-shot, limit, the documents evaluated, the dataset each task read
(Hub id, config, split, revision, or a local file's name and sha256) and every metric with its stderr. No local
path is kept (a task's YAML and data files are named by file name).

lm-eval is an optional extra (`pip install 'publish-pruned[lm-eval]'`); `require_harness` says so in one line.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from ..hashing import sha256_file
from ..settings import stable_hash
from .errors import MeasureError

# The seven zero-shot tasks of SparseGPT's and Wanda's tables, as the harness names them.
WANDA_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
TASK_PRESETS: dict[str, tuple[str, ...]] = {"wanda": WANDA_TASKS}
EXTRA = "pip install 'publish-pruned[lm-eval]'"
# datasets' packaged builders: a task whose dataset_path is one of these reads local files, not a Hub dataset
LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "sql", "webdataset"}
RECORD_VERSION = 1  # bumped when what is recorded per task changes, so older cached dense records are not reused


def require_harness() -> None:
    """One line naming the extra when lm-evaluation-harness is not installed."""
    if importlib.util.find_spec("lm_eval") is None:
        raise SettingsError(f"--lm-eval-tasks needs lm-evaluation-harness, which is not installed: {EXTRA}")


def harness_version() -> str:
    require_harness()
    return importlib.metadata.version("lm_eval")


def parse_tasks(tasks: str | None, preset: str | None) -> tuple[str, ...]:
    """'--lm-eval-tasks' (a comma list) and '--lm-eval-preset' (a named list) → the task names, in order."""
    names = list(TASK_PRESETS[preset]) if preset else []
    if preset and preset not in TASK_PRESETS:
        raise SettingsError(f"--lm-eval-preset takes {', '.join(TASK_PRESETS)}, got {preset!r}")
    names += [t.strip() for t in (tasks or "").split(",") if t.strip()]
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class HarnessSettings:
    """How the harness runs: which tasks, n-shot (None: each task's default), a limit of documents per task (a
    quick run), batch size, and a folder of extra task YAMLs."""

    tasks: tuple[str, ...]
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 8
    include_path: str | None = None


@functools.lru_cache(maxsize=4)
def task_manager(include_path: str | None):
    """The harness's task index (its own tasks, then `include_path`'s); built once per process (~7 s)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def check_tasks(settings: HarnessSettings) -> None:
    """Unknown task names are an error before any model is loaded."""
    require_harness()
    if settings.include_path and not Path(settings.include_path).is_dir():
        raise SettingsError(f"--lm-eval-include {settings.include_path} is not a folder")
    known = set(task_manager(settings.include_path).all_tasks)
    unknown = [t for t in settings.tasks if t not in known]
    if unknown:
        raise SettingsError(f"lm-eval knows no task {', '.join(unknown)} (a custom task's YAML goes in the folder "
                            "given with --lm-eval-include)")


def evaluate(model: Any, tokenizer: Any, settings: HarnessSettings) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` on `model` as it is (no reload, no copy); the harness's raw output."""
    require_harness()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its warnings about a model object passed in, and metric defaults, are expected
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
        out = lm_eval.simple_evaluate(model=lm, tasks=list(settings.tasks), num_fewshot=settings.num_fewshot,
                                      limit=settings.limit, task_manager=task_manager(settings.include_path),
                                      log_samples=False)
    except (FileNotFoundError, ValueError, KeyError) as exc:  # a task's data or config: the user's to fix
        raise MeasureError(f"lm-eval could not run {', '.join(settings.tasks)}: {exc}") from None
    finally:
        quiet.setLevel(level)
    if out is None:
        raise MeasureError("lm-eval returned no results (not rank 0?)")
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _local_files(data_files: Any) -> dict[str, str]:
    """File name → sha256 of every local file a task's `dataset_kwargs.data_files` names."""
    found: dict[str, str] = {}
    values = data_files.values() if isinstance(data_files, dict) else [data_files]
    for value in values:
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, str) and Path(item).is_file():
                found[Path(item).name] = sha256_file(item)
    return found


def _dataset(config: dict[str, Any]) -> dict[str, Any]:
    """The data a task evaluated: Hub id, config, the split the harness reads (test when the task has one, else
    validation), revision; a local task's files by name and sha256."""
    path = str(config.get("dataset_path") or "")
    kwargs = config.get("dataset_kwargs") or {}
    local = path in LOCAL_BUILDERS or Path(path).exists()
    files = _local_files(kwargs.get("data_files")) if kwargs.get("data_files") else {}
    return {"path": Path(path).name if Path(path).exists() else path, "name": config.get("dataset_name"),
            "split": config.get("test_split") or config.get("validation_split"),
            "revision": kwargs.get("revision"), "hub": not local and not files, "files": files}


def _plain(value: Any) -> Any:
    """JSON for a task config: a function (`!function utils.process_docs`) by its qualified name."""
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return type(value).__name__


def config_digest(config: dict[str, Any]) -> str:
    """A hash of a task's definition as the harness ran it, without local paths (data files count by content)."""
    kept = {k: v for k, v in config.items() if k not in ("metadata", "dataset_kwargs")}
    kwargs = dict(config.get("dataset_kwargs") or {})
    if kwargs.get("data_files"):
        kwargs["data_files"] = _local_files(kwargs["data_files"]) or kwargs["data_files"]
    kept["dataset_kwargs"] = kwargs
    kept["version"] = (config.get("metadata") or {}).get("version")
    return stable_hash(json.loads(json.dumps(kept, sort_keys=True, default=_plain)))


def task_records(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per leaf task: version, n-shot, limit, documents, dataset and every metric with its stderr."""
    limit = (out.get("config") or {}).get("limit")
    records = {}
    for task, config in (out.get("configs") or {}).items():
        scores = (out.get("results") or {}).get(task, {})
        better = (out.get("higher_is_better") or {}).get(task, {})
        metrics = {}
        for key, value in scores.items():
            metric, sep, filter_name = key.partition(",")
            if not sep or metric.endswith("_stderr") or _number(value) is None:
                continue
            metrics[metric] = {"value": _number(value), "stderr": _number(scores.get(f"{metric}_stderr,{filter_name}")),
                               "filter": filter_name, "higher_is_better": better.get(metric)}
        samples = (out.get("n-samples") or {}).get(task, {})
        records[task] = {
            "task": task, "version": (out.get("versions") or {}).get(task),
            "n_shot": (out.get("n-shot") or {}).get(task), "limit": limit,
            "docs": {"evaluated": samples.get("effective"), "total": samples.get("original")},
            "output_type": config.get("output_type"), "dataset": _dataset(config),
            "config_digest": config_digest(config), "metrics": metrics}
    return records


def run_tasks(model: Any, tokenizer: Any, settings: HarnessSettings) -> dict[str, Any]:
    """The harness on `model`: {"harness": {...}, "tasks": {name: record}} (see `task_records`)."""
    out = evaluate(model, tokenizer, settings)
    config = out.get("config") or {}
    return {"harness": harness_record(out.get("lm_eval_version") or harness_version(), settings, config),
            "tasks": task_records(out)}


def harness_record(version: str, settings: HarnessSettings, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a reader needs to rerun the harness as the tool did."""
    config = config or {}
    return {"name": "lm-evaluation-harness", "version": version, "model": "HFLM on the loaded model",
            "batch_size": settings.batch_size, "num_fewshot": settings.num_fewshot, "limit": settings.limit,
            "include_path": Path(settings.include_path).name if settings.include_path else None,
            "seeds": {k: config.get(k) for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")},
            "chat_template": False}
