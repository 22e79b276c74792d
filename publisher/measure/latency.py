"""Generation latency of a pruned checkpoint and its dense base (docs/measurement.md), measured with MLX, interleaved.

    >>> cmp = measure_latency(Path("runs/x"), Path("runs/x/dense"), prompts)   # prompts: BBQ chat strings/messages
    >>> cmp.measured, cmp.pruned.mean_s, cmp.dense.mean_s, cmp.ratio.value       # ratio = pruned / dense
    (True, 8.87, 7.93, 1.12)                     # SmolLM2-135M, bf16, MLX CPU backend, 2 shared cores
    >>> cmp.ratio.ci95_low, cmp.ratio.ci95_high  # 4 items: wide; the table prints it
    (0.98, 1.27)
    >>> print(latency_table(cmp))            # what `publish-pruned latency` prints
    >>> json.dumps(dataclasses.asdict(cmp))  # plain dataclasses: results.json-ready
    >>> one = measure_model_latency(Path("runs/x"))   # a single model; prompts=None → BUILTIN_PROMPTS
    >>> measure_latency(a, Path("folder/with/unknown/arch")).reason
    "dense model: mlx-lm 0.32.2 has no implementation of architecture 'not-a-model' (NotAModelForCausalLM)"

How: both models are loaded by mlx-lm straight from their transformers folders (config.json, model*.safetensors,
sharded or not, tokenizer files; no conversion step and no files written). transformers >= 5 saves RoPE settings
as `rope_parameters`, which mlx-lm's older model files (llama, qwen2, mistral, ...) do not read: they would fall
back to their own default `rope_theta` (a silently different model, e.g. SmolLM2's 100000 becomes 10000), so
`mlx_config_overrides` hands them `rope_theta` / `rope_scaling` at load time.

Modes (`mode`, named on the card): "fixed" (the default) times a greedy generation of exactly `max_tokens` new tokens
(EOS does not stop it), so both models always do the same work and the ratio compares like with like; "study"
times what the study timed — one `mlx_lm.generate`-style generation sampled at T = 0.3 from the full vocabulary,
stopping at EOS or `max_tokens` (MLX: `stream_generate` with `make_sampler(temp=0.3)` after `mx.random.seed`) — so
its per-item seconds include only as many tokens as the model chose to write (recorded).

Protocol: a seeded sample of `n_items` prompts; `warmup` untimed generations per model; then per item both models
in turn, so drift, thermal state and neighbours' load hit both, with the order alternating from item to item
(pruned, dense | dense, pruned | pruned, dense ...; recorded in `order`). With a fixed A/B order the first slot
won whichever model held it (SmolLM2 on the shared 2-core CPU, 8 items: dense against itself 0.978; pruned first
0.952 pruned/dense; dense first 0.942 dense/pruned), which would pass for a pruning speed-up; an even `n_items`
cancels it. One item = `time.perf_counter` around one generation from a fresh KV cache (fixed mode: prefill +
max_tokens - 1 greedy decode steps, each evaluated before the next). Tokenization is outside the timed region in
both modes (the study's timer also covered tokenizing the prompt string).
Per model: mean, median, p95, standard deviation (ddof 1) of the per-item seconds; prompt tokens/s = prompt
tokens / prefill seconds and generation tokens/s = decode tokens / decode seconds, both summed over items; peak
memory = weights (MLX active memory added by the load) + the most any item allocated above what was resident
before it (`mx.reset_peak_memory` before each item), i.e. the peak of a process holding only that model.
Ratio: pruned mean / dense mean, with a seeded bootstrap 95 % interval over items (paired resampling) when at least
`MIN_ITEMS_FOR_INTERVAL` items were timed (fewer give no interval worth printing), and the median and standard
deviation of the per-item paired ratios.

Where MLX cannot run (not installed, architecture unknown to mlx-lm, load or generation failure) the result has
`measured=False` and a one-line `reason`; nothing is raised. Bad settings raise `LatencySettingsError`.
`backend="torch"` runs the same protocol on transformers (CPU), labelled as such and never mixed with MLX rows.
"""

from __future__ import annotations

import inspect
import json
import numbers
import os
import platform
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from ..config_compat import top_level_fields as mlx_config_overrides  # also written at save
from ..environment import cpu_model
from ..errors import SettingsError
from .bbq import SYSTEM_PROMPT, USER_TEMPLATE
from .chat import chat_token_ids, eos_token_ids, has_chat_template
from .errors import MeasureError

# SmolLM2-135M (bf16) on the shared 2-core AMD EPYC dev machine with MLX's CPU backend: one generation of a
# BBQ-length prompt (~105 tokens; the prefill dominates) costs ~7 s of CPU on one core and 6-12 s of wall time
# depending on what other users run. The stage must fit in 3 minutes: 4 items + 1 warm-up per model (10
# generations) took 93 s at load average 4.4, while 6 items took up to 173 s under such load (too close).
# One warm-up: the first generation of a model is ~1.5-2x slower, the second is already at the steady state
# (`warmup_s` records them). Even, so the alternating order is balanced. On Apple-Silicon Metal the stage takes
# seconds: pass more items there (bench/bench_latency.py has the runs).
DEFAULT_N_ITEMS = 4
DEFAULT_MAX_TOKENS = 5
DEFAULT_WARMUP = 1
MAX_TOKENS_RANGE = (1, 512)
MAX_WARMUP = 100
BOOTSTRAP_RESAMPLES = 2000
MIN_ITEMS_FOR_INTERVAL = 10
BACKENDS = ("mlx", "torch")
LATENCY_BACKENDS = ("auto", *BACKENDS)  # --latency-backend
MLX_CPU_MAX_PARAMS = 1_000_000_000  # above this, `auto` does not time MLX on a CPU (a 9B takes hours there)
# fixed: greedy, exactly max_tokens tokens, EOS ignored; study: sampled at T = 0.3 (full vocabulary), stops at EOS
LATENCY_MODES = ("fixed", "study")
STUDY_TEMPERATURE = 0.3
STUDY_SEED = 42  # the first of the study's seeds; each timed item is one generation under it

Message = dict[str, str]
Prompt = str | Sequence[Message]


class LatencySettingsError(SettingsError):
    """A latency option that cannot work: no prompts, n_items < 1, max_tokens or warmup out of range."""


class MLXUnavailableError(MeasureError):
    """MLX / mlx-lm cannot run this model here: not installed, unknown architecture, or the load failed."""


# Built-in prompts for when BBQ is skipped: BBQ's shape (its system prompt and user template) over neutral everyday
# scenes, about as long as BBQ's prompts (SmolLM2 chat template: 109 tokens on average vs 105 for BBQ items), so
# timings are comparable with BBQ-prompt timings.
_SCENES = (
    ("Two neighbours were repainting a fence on a windy afternoon. One held the ladder while the other "
     "worked along the top rail with a wide brush. The paint was a pale green that both households had "
     "chosen together.",
     "Who was working along the top rail?",
     "The one holding the ladder", "The one with the brush", "Not enough information"),
    ("A train to the coast left ten minutes late. Passengers in the front carriage were given free coffee "
     "because their heating had failed. The conductor apologised twice over the speakers before the first "
     "stop.",
     "Why were some passengers given free coffee?",
     "The train was late", "Their heating had failed", "Cannot be determined"),
    ("At the library, a student returned three overdue books and paid a small fine at the desk. The "
     "librarian stamped the receipt and put the books on a trolley.",
     "What did the student pay for?", "Overdue books", "A new library card", "Unknown"),
    ("Two cooks prepared soup for a school event. One chopped the vegetables and the other tasted the "
     "broth. The hall had been booked for the whole evening by the parents' committee.",
     "Who chopped the vegetables?", "The first cook", "The second cook", "Can't be determined"),
    ("The ferry was cancelled because of fog, so the visitors took the long road around the bay. The drive "
     "took almost two hours longer than the crossing would have.",
     "How did the visitors travel?", "By ferry", "By road", "Not known"),
    ("A gardener planted tomatoes in April. By July the plants were taller than the fence. The summer had "
     "been warm and there had been plenty of rain in June.",
     "When were the tomatoes planted?", "In April", "In July", "Undetermined"),
    ("Two runners finished a race. The first stopped to stretch, the second went straight to the water "
     "table. Volunteers were handing out medals and bananas near the finish line.",
     "Who went to the water table?", "The first runner", "The second runner", "Not enough info"),
    ("The museum opened a new room of old maps. Visitors queued for an hour on the first morning. Several "
     "of the maps had been lent by a small archive in another city.",
     "What did the new room show?", "Old maps", "Paintings", "Cannot answer"),
    ("A baker sold out of bread by noon, so she baked a second batch in the afternoon. The second batch "
     "was smaller, but it was gone again before closing time.",
     "Why did she bake a second batch?", "The oven broke", "She sold out by noon", "Unknown"),
    ("Two colleagues shared a car to work. One drove in the morning, the other drove home in the evening. "
     "They had agreed on this arrangement at the start of the month.",
     "Who drove in the evening?", "The first colleague", "The second colleague", "Can't answer"),
    ("The power went out during a storm, and the family played cards by candlelight until it came back. "
     "The lights came back on a little after ten o'clock that night.",
     "What did the family do during the outage?", "Watched television", "Played cards", "Not known"),
    ("A cyclist fixed a flat tyre at the side of the road using a spare tube from her bag. She was back on "
     "the road within twenty minutes and reached home before dark.",
     "What did the cyclist use?", "A spare tube", "A new bicycle", "Undetermined"),
    ("Two friends went fishing at dawn. One caught nothing; the other caught two small trout. They cooked "
     "the fish over a small fire before walking back to the village.",
     "Who caught the trout?", "The first friend", "The second friend", "Cannot be determined"),
    ("The concert moved indoors because rain was forecast for the whole evening. Most of the audience "
     "arrived early to find seats near the stage.",
     "Why did the concert move indoors?", "Rain was forecast", "The band was late", "Unknown"),
    ("A teacher handed out maps, and the class spent the lesson finding rivers and mountain ranges. At the "
     "end of the lesson each group presented one river to the class.",
     "What did the class look for?", "Rivers and mountains", "Cities and roads", "Not enough information"),
    ("Two painters split a mural. One painted the sky, the other painted a row of houses beneath it. The "
     "mural was finished in three weeks and unveiled at the spring fair.",
     "Who painted the houses?", "The first painter", "The second painter", "Can't be determined"),
)


def _builtin_prompts() -> tuple[list[Message], ...]:
    return tuple(
        [{"role": "system", "content": SYSTEM_PROMPT},
         {"role": "user", "content": USER_TEMPLATE.format(context=c, question=q, ans0=a, ans1=b, ans2=u)}]
        for c, q, a, b, u in _SCENES
    )


BUILTIN_PROMPTS: tuple[list[Message], ...] = _builtin_prompts()


@dataclass
class Machine:
    """Where the numbers come from. `device`: "Metal", "CUDA" or "CPU"."""

    backend: str  # "mlx" | "torch"
    backend_version: str | None
    mlx_lm_version: str | None
    device: str
    chip: str
    cpu_count: int | None
    os: str
    python: str


@dataclass
class LatencyStats:
    """One model's timings over the same items; seconds per generation of `max_tokens` tokens."""

    label: str  # "pruned" | "dense" | "model"
    folder: str
    architecture: str
    dtype: str
    n_items: int
    max_tokens: int
    warmup: int
    mean_s: float
    median_s: float
    p95_s: float
    std_s: float
    min_s: float
    max_s: float
    prompt_tokens_mean: float
    prompt_tokens_per_s: float
    generation_tokens_per_s: float | None  # None when max_tokens is 1 (no decode step)
    load_s: float
    weights_bytes: int | None
    peak_memory_bytes: int | None  # None for torch (no resettable peak on CPU)
    latencies_s: list[float]  # per timed item, in item order
    warmup_s: list[float]  # the untimed warm-up generations, for the record
    mode: str = "fixed"
    generated_tokens_mean: float | None = None  # new tokens per item (always max_tokens in fixed mode)


@dataclass
class RatioEstimate:
    """pruned / dense mean latency (< 1: the pruned model is faster), with its spread over items."""

    value: float
    ci95_low: float | None  # None with fewer than MIN_ITEMS_FOR_INTERVAL items
    ci95_high: float | None
    paired_median: float
    paired_std: float
    resamples: int


@dataclass
class Step:
    """One generation, in the order it ran."""

    model: str
    item: int  # index into the prompt list
    warmup: bool


@dataclass
class LatencySettings:
    n_items: int  # items timed (the request, capped at the number of prompts)
    n_items_requested: int
    max_tokens: int
    warmup: int
    seed: int
    prompts: str  # "given (N)" | "built-in (N)"
    items: list[int]  # prompt indices sampled
    mode: str = "fixed"  # LATENCY_MODES


@dataclass
class LatencyResult:
    """A single model's latency (`publish-pruned latency --model PATH`)."""

    measured: bool
    reason: str | None
    machine: Machine
    settings: LatencySettings
    stats: LatencyStats | None = None
    order: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stage_s: float = 0.0


@dataclass
class LatencyComparison:
    """Pruned vs dense, interleaved; `ratio` is None unless both were measured."""

    measured: bool
    reason: str | None
    machine: Machine
    settings: LatencySettings
    pruned: LatencyStats | None = None
    dense: LatencyStats | None = None
    ratio: RatioEstimate | None = None
    order: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stage_s: float = 0.0


# ----------------------------------------------------------------------------------------------- settings


def _whole(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_settings(prompts: Sequence[Prompt] | None, n_items: int, max_tokens: int, warmup: int,
                    backend: str, mode: str = "fixed") -> tuple[list[Prompt], str]:
    if backend not in BACKENDS:
        raise LatencySettingsError(f"latency backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if mode not in LATENCY_MODES:
        raise LatencySettingsError(f"--latency-mode must be one of {', '.join(LATENCY_MODES)}, got {mode!r}")
    if not _whole(n_items) or n_items < 1:
        raise LatencySettingsError(f"latency n_items must be a whole number >= 1, got {n_items!r}")
    low, high = MAX_TOKENS_RANGE
    if not _whole(max_tokens) or not low <= max_tokens <= high:
        raise LatencySettingsError(f"latency max_tokens must be a whole number in {low}..{high}, got {max_tokens!r}")
    if not _whole(warmup) or not 0 <= warmup <= MAX_WARMUP:
        raise LatencySettingsError(f"latency warmup must be a whole number in 0..{MAX_WARMUP}, got {warmup!r}")
    if prompts is None:
        return list(BUILTIN_PROMPTS), f"built-in ({len(BUILTIN_PROMPTS)})"
    if isinstance(prompts, str | bytes) or not isinstance(prompts, Sequence):
        raise LatencySettingsError("latency prompts must be a list of strings or of message lists")
    if not prompts:
        raise LatencySettingsError("latency prompts: the list is empty (pass None for the built-in prompts)")
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if not prompt.strip():
                raise LatencySettingsError(f"latency prompt {i} is empty")
        elif not (isinstance(prompt, Sequence) and prompt and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in prompt)):
            raise LatencySettingsError(f"latency prompt {i} is neither a string nor a non-empty list of "
                                       "{'role': str, 'content': str} messages")
    return list(prompts), f"given ({len(prompts)})"


@dataclass
class BackendChoice:
    """What times latency: `backend` ("mlx" | "torch") on `device` (torch's), or nothing, for `skip_reason`."""

    backend: str
    device: str = "cpu"
    skip_reason: str | None = None
    why: str = ""


def choose_backend(requested: str, device: str, num_parameters: int) -> BackendChoice:
    """`--latency-backend`: "mlx" and "torch" as asked (torch on the run's device); "auto" picks MLX where it runs on
    an accelerator (Metal, or CUDA with `publish-pruned[cuda]`), torch on a CUDA GPU without MLX-CUDA (labelled
    "torch CUDA", never mixed with MLX rows), MLX on a CPU for models up to `MLX_CPU_MAX_PARAMS` — and nothing for a
    larger model on a CPU, where one item would take minutes (pass --latency-backend mlx to measure anyway).
    """
    if requested not in LATENCY_BACKENDS:
        raise LatencySettingsError(f"--latency-backend must be one of {', '.join(LATENCY_BACKENDS)}, "
                                   f"got {requested!r}")
    if requested == "mlx":
        return BackendChoice("mlx", why="asked for")
    if requested == "torch":
        return BackendChoice("torch", device, why="asked for")
    where = mlx_device()
    if where in ("Metal", "CUDA"):
        return BackendChoice("mlx", why=f"MLX runs on {where} here")
    if device.startswith("cuda"):
        return BackendChoice("torch", device, why="a CUDA GPU without MLX's CUDA backend (publish-pruned[cuda])")
    if num_parameters > MLX_CPU_MAX_PARAMS:
        return BackendChoice("mlx", skip_reason=(
            f"not measured on this CPU: MLX on a CPU takes minutes per item for a {num_parameters / 1e9:.1f} "
            "B-parameter model; pass --latency-backend mlx to measure anyway, or run on Apple Silicon or a CUDA GPU"))
    return BackendChoice("mlx", why="a model small enough for MLX on the CPU")


def _sample_items(n_prompts: int, n_items: int, seed: int) -> list[int]:
    return random.Random(seed).sample(range(n_prompts), min(n_items, n_prompts))


# ----------------------------------------------------------------------------------------------- machine


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def mlx_device() -> str | None:
    """Where MLX runs by default here: "Metal" (Apple GPU), "CUDA" (mlx[cuda12]/[cuda13]), "CPU"; None without
    MLX."""
    try:
        import mlx.core as mx
    except Exception:  # noqa: BLE001 - ImportError, or missing shared libraries
        return None
    if mx.default_device().type == mx.gpu:
        return "Metal" if mx.metal.is_available() else "CUDA"
    return "CPU"


def machine_info(backend: str = "mlx", torch_device: str = "cpu") -> Machine:
    """The machine and backend; the device is "Metal" (Apple GPU), "CUDA" or "CPU"."""
    chip, device, backend_version = cpu_model(), "CPU", None
    if backend == "mlx":
        device = mlx_device() or "CPU"
        backend_version = _package_version("mlx")
        try:
            import mlx.core as mx

            chip = str(mx.device_info().get("device_name") or chip)
        except Exception:  # noqa: BLE001 - not importable: reported by the loader
            pass
    else:
        backend_version = _package_version("torch")
        if torch_device.startswith("cuda"):
            import torch

            device, chip = "CUDA", torch.cuda.get_device_name(torch.device(torch_device))
    return Machine(backend=backend, backend_version=backend_version,
                   mlx_lm_version=_package_version("mlx-lm") if backend == "mlx" else None, device=device,
                   chip=chip, cpu_count=os.cpu_count(), os=platform.platform(), python=platform.python_version())


# ----------------------------------------------------------------------------------------------- loading


def _read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not Path(folder).is_dir():
        raise MLXUnavailableError(f"{folder}: no such folder")
    if not path.is_file():
        raise MLXUnavailableError(f"{folder}: no config.json (not a transformers model folder)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MLXUnavailableError(f"{path}: unreadable ({e})") from None


def describe_architecture(config: dict[str, Any]) -> str:
    """`'llama' (LlamaForCausalLM)` from a config dict."""
    archs = ", ".join(config.get("architectures") or []) or "no architectures listed"
    return f"{config.get('model_type')!r} ({archs})"


def _import_mlx() -> Any:
    """mlx.core, or MLXUnavailableError saying why not."""
    try:
        import mlx.core as mx
        import mlx_lm.utils  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, OSError (missing shared libraries), ...
        raise MLXUnavailableError(f"MLX is not available here ({type(e).__name__}: {e}); on Apple Silicon "
                                  "install mlx and mlx-lm, on Linux mlx[cpu] and mlx-lm") from None
    return mx


def load_mlx_model(folder: Path) -> tuple[Any, dict[str, Any]]:
    """(mlx model, config) from a transformers folder; `MLXUnavailableError` with a one-line reason otherwise.

    Never touches the network: mlx-lm's loader downloads when the path does not exist, so it is only called on
    an existing folder.
    """
    folder = Path(folder)
    config = _read_config(folder)
    _import_mlx()
    from mlx_lm.utils import load_model

    if not any(folder.glob("model*.safetensors")):
        raise MLXUnavailableError(f"{folder}: no model*.safetensors weights (mlx-lm reads only safetensors)")
    try:
        model, loaded = load_model(folder, model_config=mlx_config_overrides(config))
    except ValueError as e:
        if "not supported" in str(e):
            raise MLXUnavailableError(f"mlx-lm {_package_version('mlx-lm')} has no implementation of "
                                      f"architecture {describe_architecture(config)}") from None
        raise MLXUnavailableError(f"mlx-lm cannot load {describe_architecture(config)} from {folder}: {e}") from None
    except Exception as e:  # noqa: BLE001
        raise MLXUnavailableError(f"mlx-lm cannot load {describe_architecture(config)} from {folder}: "
                                  f"{type(e).__name__}: {e}") from None
    model.eval()
    return model, loaded


# ----------------------------------------------------------------------------------------------- runners


@dataclass
class _Timing:
    total_s: float
    prefill_s: float
    prompt_tokens: int
    generated: int
    extra_peak_bytes: int | None


def _encode(tokenizer: Any, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
        bos = getattr(tokenizer, "bos_token", None)
        ids = tokenizer.encode(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))
    elif has_chat_template(tokenizer):
        ids, _ = chat_token_ids(tokenizer, prompt, add_generation_prompt=True)
    else:  # no chat template (e.g. a base model): the contents as paragraphs
        ids = tokenizer.encode("\n\n".join(m["content"] for m in prompt))
    if not ids:
        raise MLXUnavailableError("a prompt tokenized to no tokens")
    return [int(i) for i in ids]


class _MLXRunner:
    def __init__(self, label: str, folder: Path, device: str = "default"):  # MLX picks its own device
        _read_config(Path(folder))
        mx = _import_mlx()
        from mlx.utils import tree_flatten
        from mlx_lm.models.cache import make_prompt_cache
        from transformers import AutoTokenizer

        self.label, self.folder, self.mx, self._make_cache = label, Path(folder), mx, make_prompt_cache
        mx.synchronize()
        before = mx.get_active_memory()
        start = time.perf_counter()
        self.model, self.config = load_mlx_model(self.folder)
        self.load_s = time.perf_counter() - start
        self.weights_bytes = max(0, mx.get_active_memory() - before)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        dtypes = Counter(str(v.dtype).removeprefix("mlx.core.") for _, v in tree_flatten(self.model.parameters()))
        self.dtype = dtypes.most_common(1)[0][0] if dtypes else "unknown"
        self.eos = eos_token_ids(self.config.get("eos_token_id"), getattr(self.tokenizer, "eos_token_id", None))

    def generate(self, ids: list[int], max_tokens: int, mode: str = "fixed") -> _Timing:
        return self._fixed(ids, max_tokens) if mode == "fixed" else self._study(ids, max_tokens)

    def _study(self, ids: list[int], max_tokens: int) -> _Timing:
        """One generation the way the study timed `mlx_lm.generate`: sampled at T = 0.3, stopping at EOS."""
        mx = self.mx
        from mlx_lm.generate import stream_generate
        from mlx_lm.sample_utils import make_sampler
        from mlx_lm.tokenizer_utils import TokenizerWrapper

        wrapper = TokenizerWrapper(self.tokenizer, eos_token_ids=sorted(self.eos) or None)
        mx.synchronize()
        mx.reset_peak_memory()
        resident = mx.get_active_memory()
        mx.random.seed(STUDY_SEED)
        prompt = mx.array(ids)
        start = time.perf_counter()
        first, generated = None, 0
        for response in stream_generate(self.model, wrapper, prompt, max_tokens=max_tokens,
                                         sampler=make_sampler(temp=STUDY_TEMPERATURE)):
            first = first or time.perf_counter()
            generated = response.generation_tokens
        end = time.perf_counter()
        extra = max(0, mx.get_peak_memory() - resident)
        return _Timing(end - start, (first or end) - start, len(ids), generated, extra)

    def _fixed(self, ids: list[int], max_tokens: int) -> _Timing:
        mx = self.mx
        mx.synchronize()
        mx.reset_peak_memory()
        resident = mx.get_active_memory()
        prompt = mx.array(ids)[None]
        start = time.perf_counter()
        cache = self._make_cache(self.model)
        token = mx.argmax(self.model(prompt, cache=cache)[:, -1, :], axis=-1)
        mx.eval(token)
        first = time.perf_counter()
        for _ in range(max_tokens - 1):
            token = mx.argmax(self.model(token[:, None], cache=cache)[:, -1, :], axis=-1)
            mx.eval(token)
        end = time.perf_counter()
        extra = max(0, mx.get_peak_memory() - resident)
        del cache
        return _Timing(end - start, first - start, len(ids), max_tokens, extra)


class _TorchRunner:
    def __init__(self, label: str, folder: Path, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.label, self.folder, self.torch, self.device = label, Path(folder), torch, torch.device(device)
        self.config = _read_config(self.folder)
        start = time.perf_counter()
        self.model = AutoModelForCausalLM.from_pretrained(self.folder, dtype="auto").eval().to(self.device)
        self.load_s = time.perf_counter() - start
        self.weights_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        # transformers >= 5.x names the cache argument `cache`; older versions `past_key_values`.
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.eos = eos_token_ids(self.config.get("eos_token_id"), getattr(self.tokenizer, "eos_token_id", None))

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # transformers < 4.56
            return DynamicCache()

    def _clock(self) -> float:
        """perf_counter once the device has finished what was queued (CUDA runs asynchronously)."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def generate(self, ids: list[int], max_tokens: int, mode: str = "fixed") -> _Timing:
        """fixed: greedy, exactly `max_tokens`; study: sampled at T = 0.3 (full vocabulary), stopping at EOS."""
        torch = self.torch
        generator = torch.Generator(device=self.device).manual_seed(STUDY_SEED)

        def next_token(logits: Any) -> Any:
            if mode == "fixed":
                return logits.argmax(-1, keepdim=True)
            probs = torch.softmax(logits.float() / STUDY_TEMPERATURE, dim=-1)
            return torch.multinomial(probs, 1, generator=generator)

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            resident = torch.cuda.memory_allocated(self.device)
        with torch.inference_mode():
            prompt = torch.tensor([ids], device=self.device)
            start = self._clock()
            cache = {self.cache_arg: self._new_cache()}  # filled in place
            token = next_token(self.model(prompt, use_cache=True, **cache).logits[:, -1, :])
            first = self._clock()
            generated = 1
            while generated < max_tokens and not (mode == "study" and int(token) in self.eos):
                token = next_token(self.model(token, use_cache=True, **cache).logits[:, -1, :])
                generated += 1
            end = self._clock()
        if mode == "study" and int(token) in self.eos:
            generated -= 1  # the EOS token ends the reply; mlx-lm does not count it either
        extra = max(0, torch.cuda.max_memory_allocated(self.device) - resident) if cuda else None
        return _Timing(end - start, first - start, len(ids), generated, extra)


_RUNNERS: dict[str, Callable[..., Any]] = {"mlx": _MLXRunner, "torch": _TorchRunner}


# ----------------------------------------------------------------------------------------------- protocol


def _run_interleaved(runners: list[Any], encoded: dict[str, dict[int, list[int]]], items: list[int],
                     max_tokens: int, warmup: int, current: list[str], mode: str = "fixed"
                     ) -> tuple[dict[str, list[_Timing]], dict[str, list[float]], list[Step]]:
    timings: dict[str, list[_Timing]] = {r.label: [] for r in runners}
    warm: dict[str, list[float]] = {r.label: [] for r in runners}
    order: list[Step] = []
    for w in range(warmup):
        item = items[w % len(items)]
        for runner in runners if w % 2 == 0 else runners[::-1]:
            current[0] = runner.label
            warm[runner.label].append(runner.generate(encoded[runner.label][item], max_tokens, mode).total_s)
            order.append(Step(runner.label, item, True))
    for k, item in enumerate(items):
        for runner in runners if k % 2 == 0 else runners[::-1]:  # A B, B A, A B, ...: each model first half the time
            current[0] = runner.label
            timings[runner.label].append(runner.generate(encoded[runner.label][item], max_tokens, mode))
            order.append(Step(runner.label, item, False))
    return timings, warm, order


def _stats(runner: Any, timings: list[_Timing], warm: list[float], max_tokens: int, mode: str = "fixed"
           ) -> LatencyStats:
    secs = np.array([t.total_s for t in timings], dtype=np.float64)
    prefill = sum(t.prefill_s for t in timings)
    decode = sum(t.total_s - t.prefill_s for t in timings)
    decode_tokens = sum(t.generated - 1 for t in timings)
    prompt_tokens = sum(t.prompt_tokens for t in timings)
    extras = [t.extra_peak_bytes for t in timings if t.extra_peak_bytes is not None]
    peak = runner.weights_bytes + max(extras) if extras else None
    return LatencyStats(
        label=runner.label, folder=str(runner.folder), architecture=describe_architecture(runner.config),
        dtype=runner.dtype, n_items=len(timings), max_tokens=max_tokens, warmup=len(warm),
        mean_s=float(secs.mean()), median_s=float(np.median(secs)), p95_s=float(np.percentile(secs, 95)),
        std_s=float(secs.std(ddof=1)) if len(secs) > 1 else 0.0, min_s=float(secs.min()), max_s=float(secs.max()),
        prompt_tokens_mean=prompt_tokens / len(timings), prompt_tokens_per_s=prompt_tokens / prefill,
        generation_tokens_per_s=decode_tokens / decode if decode_tokens and decode > 0 else None,
        load_s=runner.load_s, weights_bytes=runner.weights_bytes, peak_memory_bytes=peak,
        latencies_s=[float(s) for s in secs], warmup_s=warm, mode=mode,
        generated_tokens_mean=sum(t.generated for t in timings) / len(timings),
    )


def ratio_estimate(pruned_s: Sequence[float], dense_s: Sequence[float], *, seed: int = 0,
                   resamples: int = BOOTSTRAP_RESAMPLES) -> RatioEstimate:
    """mean(pruned) / mean(dense) with a paired bootstrap 95 % interval (items resampled together); no interval
    (None) from fewer than `MIN_ITEMS_FOR_INTERVAL` items.

        >>> ratio_estimate([1.0, 1.1, 0.9], [2.0, 2.0, 2.0]).value
        0.5
    """
    a, b = np.asarray(pruned_s, dtype=np.float64), np.asarray(dense_s, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need paired, non-empty timings, got {a.size} and {b.size}")
    low = high = None
    if a.size >= MIN_ITEMS_FOR_INTERVAL:
        picks = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
        boot = a[picks].mean(axis=1) / b[picks].mean(axis=1)
        low, high = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    paired = a / b
    return RatioEstimate(value=float(a.mean() / b.mean()), ci95_low=low, ci95_high=high,
                         paired_median=float(np.median(paired)),
                         paired_std=float(paired.std(ddof=1)) if a.size > 1 else 0.0, resamples=resamples)


def _notes(machine: Machine, settings: LatencySettings, stats: list[LatencyStats]) -> list[str]:
    notes = []
    if settings.n_items < settings.n_items_requested:
        notes.append(f"{settings.n_items_requested} items requested, only {settings.n_items} prompts available")
    if len(stats) == 2 and settings.n_items % 2:
        notes.append(f"{settings.n_items} items, an odd number: the pruned model ran first once more often than the "
                     "dense one (an even count balances the order)")
    if machine.backend == "mlx" and machine.device != "Metal":
        notes.append(f"MLX on {machine.device}, not Apple-Silicon Metal: absolute times do not transfer to Macs; "
                     "the pruned/dense ratio is the comparable number")
    if machine.backend == "torch":
        notes.append("torch (transformers) timing, not MLX: not comparable with MLX rows")
    if len({s.dtype for s in stats}) > 1:
        notes.append("the models have different dtypes (" + ", ".join(f"{s.label} {s.dtype}" for s in stats)
                     + "): the ratio compares more than the pruning")
    if settings.n_items < MIN_ITEMS_FOR_INTERVAL:
        notes.append(f"{settings.n_items} items: no 95 % interval (it needs at least {MIN_ITEMS_FOR_INTERVAL})")
    if settings.mode == "study":
        notes.append("study mode: sampled at T = 0.3 and stopped at EOS, so the models may write different numbers "
                     "of tokens (generated_tokens_mean)")
    notes.append("dense kernels only: zeroed weights are still multiplied, so pruning alone gives no speed-up")
    return notes


def _measure(models: list[tuple[str, Path]], prompts: Sequence[Prompt] | None, n_items: int, max_tokens: int,
             warmup: int, seed: int, backend: str, mode: str = "fixed", device: str = "cpu"
             ) -> tuple[Machine, LatencySettings, dict[str, LatencyStats], list[Step], str | None, float]:
    prompt_list, source = _check_settings(prompts, n_items, max_tokens, warmup, backend, mode)
    n_items, max_tokens, warmup, seed = int(n_items), int(max_tokens), int(warmup), int(seed)
    start = time.perf_counter()
    items = _sample_items(len(prompt_list), n_items, seed)
    settings = LatencySettings(n_items=len(items), n_items_requested=n_items, max_tokens=max_tokens,
                               warmup=warmup, seed=seed, prompts=source, items=items, mode=mode)
    machine = machine_info(backend, device)
    runners: list[Any] = []
    current = [models[0][0]]  # the model being loaded, tokenized for or run: named in the reason
    try:
        for label, folder in models:
            current[0] = label
            runners.append(_RUNNERS[backend](label, Path(folder), device))
        encoded = {}
        for runner in runners:
            current[0] = runner.label
            encoded[runner.label] = {i: _encode(runner.tokenizer, prompt_list[i]) for i in items}
        timings, warm, order = _run_interleaved(runners, encoded, items, max_tokens, warmup, current, mode)
        stats = {r.label: _stats(r, timings[r.label], warm[r.label], max_tokens, mode) for r in runners}
    except Exception as e:  # noqa: BLE001 - a latency row is optional: the run goes on without it
        who = f"{current[0]} model: " if len(models) > 1 else ""
        return machine, settings, {}, [], who + _one_line(e), time.perf_counter() - start
    finally:
        runners.clear()  # free both models before the run goes on
        _release(backend)
    return machine, settings, stats, order, None, time.perf_counter() - start


def _one_line(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return "out of memory"
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    return text if isinstance(e, MLXUnavailableError) else f"{type(e).__name__}: {text}".rstrip(": ")


def _release(backend: str) -> None:
    if backend == "mlx":
        try:
            import mlx.core as mx

            mx.clear_cache()
        except Exception:  # noqa: BLE001 - nothing to release when MLX never ran
            pass


def measure_latency(pruned_dir: Path, dense_dir: Path, prompts: Sequence[Prompt] | None = None, *,
                    n_items: int = DEFAULT_N_ITEMS, max_tokens: int = DEFAULT_MAX_TOKENS,
                    warmup: int = DEFAULT_WARMUP, seed: int = 0, backend: str = "mlx",
                    mode: str = "fixed", device: str = "cpu") -> LatencyComparison:
    """Pruned vs dense latency, interleaved item by item; see the module docstring for the protocol.

    prompts: strings (already chat-formatted) or message lists (rendered with each model's chat template);
    None → BUILTIN_PROMPTS. Raises LatencySettingsError on bad settings; everything else ends up in `reason`.
    """
    machine, settings, stats, order, reason, stage_s = _measure(
        [("pruned", Path(pruned_dir)), ("dense", Path(dense_dir))], prompts, n_items, max_tokens, warmup, seed,
        backend, mode, device)
    if reason is not None:
        return LatencyComparison(measured=False, reason=reason, machine=machine, settings=settings, stage_s=stage_s)
    pruned, dense = stats["pruned"], stats["dense"]
    return LatencyComparison(
        measured=True, reason=None, machine=machine, settings=settings, pruned=pruned, dense=dense,
        ratio=ratio_estimate(pruned.latencies_s, dense.latencies_s, seed=seed), order=order,
        notes=_notes(machine, settings, [pruned, dense]), stage_s=stage_s)


def measure_model_latency(folder: Path, prompts: Sequence[Prompt] | None = None, *,
                          n_items: int = DEFAULT_N_ITEMS, max_tokens: int = DEFAULT_MAX_TOKENS,
                          warmup: int = DEFAULT_WARMUP, seed: int = 0, backend: str = "mlx",
                          mode: str = "fixed", device: str = "cpu") -> LatencyResult:
    """One model's latency with the same protocol (no interleaving partner)."""
    machine, settings, stats, order, reason, stage_s = _measure(
        [("model", Path(folder))], prompts, n_items, max_tokens, warmup, seed, backend, mode, device)
    if reason is not None:
        return LatencyResult(measured=False, reason=reason, machine=machine, settings=settings, stage_s=stage_s)
    return LatencyResult(measured=True, reason=None, machine=machine, settings=settings, stats=stats["model"],
                         order=order, notes=_notes(machine, settings, [stats["model"]]), stage_s=stage_s)


# ----------------------------------------------------------------------------------------------- table


def _mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**20:.0f}"


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def timed_work(mode: str, max_tokens: int) -> str:
    """What one timed item is, in words (the card and the table say it the same way)."""
    if mode == "study":
        return (f"one generation sampled at T = {STUDY_TEMPERATURE} from the full vocabulary, stopping at EOS or "
                f"{max_tokens} new tokens (the study's mlx_lm.generate)")
    return f"one greedy generation of exactly {max_tokens} new tokens (EOS ignored)"


def latency_table(result: LatencyComparison | LatencyResult) -> str:
    """Plain-text table of a comparison or a single-model result (what `publish-pruned latency` prints)."""
    m, s = result.machine, result.settings
    backend = "MLX" if m.backend == "mlx" else "torch"
    head = (f"Latency ({backend} {m.backend_version or '?'}, {m.device}, {m.chip}, {m.os}): {s.n_items} items "
            f"({s.prompts} prompts, seed {s.seed}), {timed_work(s.mode, s.max_tokens)}, {s.warmup} warm-up per model")
    if not result.measured:
        return f"Latency: not measured — {result.reason}"
    rows = [r for r in ([result.pruned, result.dense] if isinstance(result, LatencyComparison) else [result.stats])
            if r is not None]
    cols = ("model", "dtype", "mean s", "median s", "p95 s", "std s", "prompt tok", "prompt tok/s", "gen tok/s",
            "peak MB")
    table = [cols] + [(r.label, r.dtype, f"{r.mean_s:.3f}", f"{r.median_s:.3f}", f"{r.p95_s:.3f}", f"{r.std_s:.3f}",
                       f"{r.prompt_tokens_mean:.0f}", _rate(r.prompt_tokens_per_s), _rate(r.generation_tokens_per_s),
                       _mb(r.peak_memory_bytes)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = [head]
    for row in table:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells)).rstrip())
    if isinstance(result, LatencyComparison) and result.ratio is not None:
        r = result.ratio
        interval = (f"95 % CI {r.ci95_low:.3f}–{r.ci95_high:.3f}" if r.ci95_low is not None
                    else f"no interval from {s.n_items} items")
        lines.append(f"pruned / dense mean latency: {r.value:.3f}× ({interval}; "
                     f"per item, interleaved: median {r.paired_median:.3f}, std {r.paired_std:.3f})")
    lines.append(f"stage wall time {result.stage_s:.1f} s")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)

