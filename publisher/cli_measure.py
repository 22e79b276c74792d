"""Measurement commands and options: `eval`, `latency`, `bbq prepare`, and the main command's eval options.

    publish-pruned eval --model ./runs/x --bbq-path ../shared/data/bbq --bbq-categories all --bbq-limit 6
    publish-pruned latency --model ./runs/x --latency-items 8
    publish-pruned bbq prepare --bbq-path ../shared/data/bbq --bbq-categories all --out bbq-items/
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from types import SimpleNamespace

import click

from .cli_output import output_flags, print_json
from .errors import SettingsError

# Shared by the measure stage's options and the `latency` command.
latency_backend_option = click.option(
    "--latency-backend", type=click.Choice(["auto", "mlx", "torch"]), default="auto",
    envvar="PUBLISH_PRUNED_LATENCY_BACKEND",
    help="auto: MLX on Apple Silicon or with publish-pruned[cuda], torch on a CUDA GPU otherwise (labelled torch "
    "CUDA), MLX on a CPU only up to 1 B parameters (larger: not measured, say why).")
latency_mode_option = click.option(
    "--latency-mode", type=click.Choice(["fixed", "study"]), default="fixed", envvar="PUBLISH_PRUNED_LATENCY_MODE",
    help="fixed: greedy, exactly --latency-max-tokens tokens per item (same work for both models); study: sampled at "
    "T = 0.3, stopping at EOS, as the study's mlx_lm.generate.")


def eval_options(fn):
    """Protocol settings of the measure stage, shared by the main command and `eval`."""
    options = [
        click.option("--skip-eval", envvar="PUBLISH_PRUNED_SKIP_EVAL", default="",
                      help="Comma list of measurements to skip: ppl, srs, latency (the card then omits them)."),
        click.option("--ppl-data", envvar="PUBLISH_PRUNED_PPL_DATA",
                      help="Perplexity text: a local .jsonl of `messages` or `text` [default: "
                      "allenai/tulu-3-sft-mixture on the Hub]."),
        click.option("--ppl-samples", type=int, default=256, help="Perplexity rows (N)."),
        click.option("--ppl-seq-len", type=int, default=512, help="Tokens per perplexity row (L)."),
        click.option("--ppl-preset", default="tulu3", envvar="PUBLISH_PRUNED_PPL_PRESET",
                      help="Comma list of perplexity protocols: tulu3 (the study's), wikitext2, c4 (SparseGPT's and "
                      "Wanda's); each with its own dense baseline."),
        click.option("--ppl-preset-data", multiple=True, metavar="PRESET=FILE",
                      help="A local file for a preset, in the Hub dataset's shape (.parquet, .jsonl, .json.gz of "
                      "`text`, or wiki.test.raw): wikitext2=wiki.test.raw. Repeatable [default: the Hub dataset]."),
        click.option("--ppl-preset-seq-len", type=int,
                      help="Tokens per window for wikitext2/c4 [default: max_position_embeddings, at most 4096]."),
        click.option("--ppl-preset-windows", type=int, help="At most N windows per preset (quick runs)."),
        click.option("--lm-eval-tasks", envvar="PUBLISH_PRUNED_LM_EVAL_TASKS",
                      help="Comma list of lm-evaluation-harness tasks run on both models (needs "
                      "publish-pruned[lm-eval]), e.g. boolq,rte or a task of --lm-eval-include."),
        click.option("--lm-eval-preset", type=click.Choice(["wanda"]),
                      help="wanda: the seven zero-shot tasks of SparseGPT's and Wanda's tables (boolq, rte, hellaswag, "
                      "winogrande, arc_easy, arc_challenge, openbookqa)."),
        click.option("--lm-eval-include", type=click.Path(exists=True, file_okay=False),
                      help="A folder of task YAMLs for lm-eval (its include_path): a task over a local JSON file."),
        click.option("--lm-eval-limit", type=int, help="Documents per lm-eval task (quick runs; the card says so)."),
        click.option("--lm-eval-num-fewshot", type=int, help="Few-shot examples [default: each task's own, 0 for "
                      "the seven]."),
        click.option("--lm-eval-batch-size", type=int, default=8, help="lm-eval requests per batch."),
        click.option("--bbq-path", type=click.Path(exists=True, path_type=Path), envvar="PUBLISH_PRUNED_BBQ_PATH",
                      help="Folder of original BBQ .jsonl files (or a prepared items file) [default: Elfsong/BBQ]."),
        click.option("--bbq-categories", help="Comma list, or 'all' [default: Age, Gender_identity, Race_ethnicity, "
                      "Religion, SES]."),
        click.option("--bbq-conditions", default="ambig", help="ambig, disambig or both (comma list)."),
        click.option("--bbq-limit", type=int, help="Items per category (quick runs; the card says so)."),
        click.option("--eval-batch-size", default="auto", envvar="PUBLISH_PRUNED_EVAL_BATCH_SIZE",
                      help="SRS prompts (x 5 seeds) and perplexity rows per batch: auto (the largest that fits the "
                      "GPU's free memory, halved on out-of-memory; on a CPU the size measured fastest) or a number."),
        click.option("--parser", type=click.Choice(["protocol", "study"]), default="protocol",
                      envvar="PUBLISH_PRUNED_PARSER",
                      help="How a BBQ reply becomes a letter: protocol (the protocol's four rules) or study (the "
                      "study code's regexes; differs on replies such as 'Answer: C'). The card names it."),
        click.option("--srs-precision", type=click.Choice(["float32", "native"]), default="float32",
                      envvar="PUBLISH_PRUNED_SRS_PRECISION",
                      help="Decode SRS replies in float32 (weights upcast where memory allows, so no reply depends "
                      "on its batch) or in the model's own dtype."),
        click.option("--latency-items", type=int, help="Prompts timed per model [default: a few; see the card]."),
        click.option("--latency-max-tokens", type=int, default=5, help="New tokens per timed generation."),
        click.option("--latency-warmup", type=int, default=1, help="Untimed generations per model first."),
        latency_backend_option,
        latency_mode_option,
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="PUBLISH_PRUNED_CACHE",
                      help="Where dense baselines are cached [default: ~/.cache/publish-pruned].")
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def placement_options(fn):
    """Where the model runs: one device, or a device map across GPUs, CPU and disk (main command and `eval`)."""
    options = [
        click.option("--device", default="auto", envvar="PUBLISH_PRUNED_DEVICE",
                     help="torch device: auto (the first CUDA GPU when present, else the CPU), cpu, cuda, cuda:1, "
                     "or mps (untested; used only when asked for). The device chosen is printed and recorded."),
        click.option("--device-map", envvar="PUBLISH_PRUNED_DEVICE_MAP",
                     help="Spread a model too large for one device: auto, balanced, balanced_low_0, sequential "
                     "(accelerate places blocks on GPUs, then CPU, then disk), or a .json of module → device."),
        click.option("--max-memory", envvar="PUBLISH_PRUNED_MAX_MEMORY",
                     help="With --device-map: memory per device, e.g. 0=70GiB,1=70GiB,cpu=200GiB."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def check_output_file(path: Path | None, option: str) -> None:
    """Before any work: a file can be written at `path` (no folder there, no file in the way of its folders)."""
    if path is None:
        return
    if path.is_dir():
        raise SettingsError(f"{option} {path} is a folder, not a file")
    ancestor = next((p for p in path.parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise SettingsError(f"{option} {path}: {ancestor} is a file, not a folder")


def _items(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def literature_options(opts: dict) -> dict:
    """The perplexity-preset and lm-eval options as EvalSettings fields."""
    from .measure.harness import parse_tasks

    data = []
    for item in opts["ppl_preset_data"]:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path:
            raise SettingsError(f"--ppl-preset-data takes PRESET=FILE, got {item!r}")
        data.append((name.strip(), path))
    return {"ppl_presets": tuple(_items(opts["ppl_preset"])), "ppl_preset_data": tuple(data),
            "ppl_preset_seq_len": opts["ppl_preset_seq_len"], "ppl_preset_windows": opts["ppl_preset_windows"],
            "lm_eval_tasks": parse_tasks(opts["lm_eval_tasks"], opts["lm_eval_preset"]),
            "lm_eval_include": opts["lm_eval_include"], "lm_eval_limit": opts["lm_eval_limit"],
            "lm_eval_num_fewshot": opts["lm_eval_num_fewshot"], "lm_eval_batch_size": opts["lm_eval_batch_size"]}


def _literature(model, tokenizer, settings) -> dict:
    """`eval`'s perplexity presets and lm-eval tasks of one model (results.json's sections, role "model")."""
    from .literature import LiteratureRun

    literature = settings.literature()
    if not literature.wanted:
        return {}
    run = LiteratureRun(literature, tokenizer, model.config)
    run.measure("model", model, tokenizer)
    return run.sections()


def _literature_lines(sections: dict) -> list[str]:
    lines = [f"perplexity  {name:<10} {p['model']['ppl']:.3f} ({p['model']['rows']} windows x "
             f"{p['model']['seq_len']} tokens)" for name, p in sections.get("perplexity_presets", {}).items()]
    for task, record in sections.get("lm_eval", {}).get("tasks", {}).items():
        for metric, score in record["metrics"].items():
            stderr = score["model"]["stderr"]
            lines.append(f"lm-eval     {task:<10} {metric:<9} {score['model']['value']:.4f}"
                         + (f" ± {stderr:.4f}" if stderr is not None else "")
                         + f"  ({record['n_shot']}-shot, {record['docs']['evaluated']} docs)")
    return lines


def eval_settings(opts: dict):
    from .evaluation import EvalSettings

    return EvalSettings(
        skip=frozenset(_items(opts["skip_eval"])), ppl_data=opts["ppl_data"], ppl_samples=opts["ppl_samples"],
        ppl_seq_len=opts["ppl_seq_len"], bbq_path=str(opts["bbq_path"]) if opts["bbq_path"] else None,
        bbq_categories=opts["bbq_categories"], bbq_conditions=tuple(_items(opts["bbq_conditions"])),
        bbq_limit=opts["bbq_limit"], parser=opts["parser"], srs_precision=opts["srs_precision"],
        **literature_options(opts),
        eval_batch_size=opts["eval_batch_size"],
        latency_items=opts["latency_items"], latency_max_tokens=opts["latency_max_tokens"],
        latency_warmup=opts["latency_warmup"], latency_mode=opts["latency_mode"],
        latency_backend=opts["latency_backend"],
    )


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _guarded(ctx: click.Context, action) -> None:
    from .cli_errors import fail
    from .errors import PublishPrunedError

    try:
        action()
    except (PublishPrunedError, KeyboardInterrupt, Exception) as exc:
        fail(exc, bool(ctx.obj and ctx.obj.get("verbose")))


def _load(model: str, dtype: str, trust_remote_code: bool, placement: dict, offload_dir: Path):
    from .model_io import fetch_weights, load_model, resolve_source
    from .settings import RunSettings

    settings = RunSettings(model=model, sparsity=0.5, dtype=dtype, trust_remote_code=trust_remote_code,
                           **placement)  # sparsity unused: nothing is pruned
    source = resolve_source(settings)
    return load_model(source, fetch_weights(source, settings), settings, offload_dir=offload_dir)


@click.command("eval")
@click.option("--model", required=True, help="Hub id, local folder or .gguf: a dense base or a checkpoint "
              "pruned elsewhere.")
@click.option("--dtype", default="auto", type=click.Choice(["auto", "float32", "bfloat16", "float16"]))
@placement_options
@click.option("--trust-remote-code", is_flag=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the metrics as JSON here.")
@eval_options
@click.pass_context
def eval_command(ctx: click.Context, model: str, dtype: str, device: str, device_map: str | None,
                 max_memory: str | None, trust_remote_code: bool, output: Path | None, **opts) -> None:
    """Perplexity and SRS of one model, alone (latency: see `latency`).

    \b
    publish-pruned eval --model HuggingFaceTB/SmolLM2-135M-Instruct --bbq-limit 30
    """
    from .evaluation import measure_model, prepare_inputs
    from .placement import device_notice, resolve_device
    from .results import write_json_atomic

    def action() -> None:
        check_output_file(output, "--output")
        settings = eval_settings(opts)
        placement = {"device": resolve_device(device, device_map), "device_map": device_map, "max_memory": max_memory}
        if not (output_flags(ctx).json or output_flags(ctx).quiet):
            click.echo(device_notice(device, SimpleNamespace(**placement)), err=True)
        with tempfile.TemporaryDirectory(prefix="publish-pruned-offload-") as offload_dir:
            loaded, tokenizer = _load(model, dtype, trust_remote_code, placement, Path(offload_dir))
            rows, bbq = prepare_inputs(tokenizer, settings)
            found = measure_model(loaded, tokenizer, settings, ppl_rows=rows, bbq=bbq)
            literature = _literature(loaded, tokenizer, settings)
        srs = dataclasses.asdict(found.srs) if found.srs is not None else None
        if srs is not None:
            srs.pop("replies")
        data = {"device": placement["device_map"] or placement["device"], "limits": settings.limits, "srs": srs,
                "perplexity": dataclasses.asdict(found.perplexity) if found.perplexity else None, **literature}
        if output is not None:
            write_json_atomic(output, data)
        if output_flags(ctx).json:
            print_json({**data, "output": str(output) if output is not None else None})
            return
        if found.perplexity is not None:
            click.echo(f"perplexity  {found.perplexity.ppl:.3f} ± {found.perplexity.se:.3f} "
                       f"({found.perplexity.rows} x {found.perplexity.seq_len} tokens)")
        for line in _literature_lines(literature):
            click.echo(line)
        if found.srs is not None:
            for group in found.srs.per_category:
                click.echo(f"{group.category:<20} {group.condition:<8} SRS {_num(group.srs.rate)} "
                           f"[{group.srs.low:.3f}, {group.srs.high:.3f}]  USR {_num(group.usr.rate)}  "
                           f"parse failures {_num(group.parse_failure.rate)}")
            for condition, overall in found.srs.overall.items():
                click.echo(f"{'overall':<20} {condition:<8} SRS {_num(overall.srs.value)}  "
                           f"USR {_num(overall.usr.value)}")
        if output is not None:
            click.echo(str(output))

    _guarded(ctx, action)


@click.command("latency")
@click.option("--model", "folder", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A transformers folder with safetensors (e.g. a run folder).")
@click.option("--latency-items", type=int, help="Prompts timed.")
@click.option("--latency-max-tokens", type=int, default=5)
@click.option("--latency-warmup", type=int, default=1)
@latency_mode_option
@latency_backend_option
@click.option("--device", default="auto", help="torch's device for --latency-backend torch: auto, cpu, cuda, cuda:1.")
@click.pass_context
def latency_command(ctx: click.Context, folder: Path, latency_items: int | None, latency_max_tokens: int,
                    latency_warmup: int, latency_mode: str, latency_backend: str, device: str) -> None:
    """Latency of one checkpoint (MLX, or torch on a CUDA GPU), printed as a table (built-in BBQ-shaped prompts).

    \b
    publish-pruned latency --model runs/smollm2-135m-instruct-magnitude-s50
    publish-pruned latency --model runs/x --latency-backend torch --device cuda
    """
    from .measure.errors import MeasureError
    from .measure.latency import choose_backend, latency_table, measure_model_latency
    from .placement import resolve_device
    from .safetensors_io import checkpoint_parameters

    def action() -> None:
        chosen = resolve_device(device)
        choice = choose_backend(latency_backend, chosen, checkpoint_parameters(folder))
        if choice.skip_reason is not None:
            raise MeasureError(f"latency not measured: {choice.skip_reason}")
        kwargs = {"max_tokens": latency_max_tokens, "warmup": latency_warmup, "mode": latency_mode,
                  "backend": choice.backend, "device": choice.device}
        if latency_items is not None:
            kwargs["n_items"] = latency_items
        result = measure_model_latency(folder, None, **kwargs)
        if not result.measured:  # measuring is this command's only job
            raise MeasureError(f"latency not measured: {result.reason}")
        if output_flags(ctx).json:
            print_json(dataclasses.asdict(result))
        else:
            click.echo(latency_table(result))

    _guarded(ctx, action)


@click.group("bbq")
def bbq_group() -> None:
    """The BBQ items the SRS measurement asks."""


@bbq_group.command("prepare")
@click.option("--bbq-path", type=click.Path(exists=True, path_type=Path),
              help="Folder of original BBQ .jsonl files [default: Elfsong/BBQ on the Hub].")
@click.option("--bbq-categories", help="Comma list, or 'all' [default: the study's five].")
@click.option("--conditions", default="ambig", help="ambig, disambig, or both (comma list).")
@click.option("--bbq-limit", type=int, help="Items per category.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for bbq_items.jsonl, bbq_excluded.jsonl and bbq_summary.json.")
@click.pass_context
def bbq_prepare(ctx: click.Context, bbq_path: Path | None, bbq_categories: str | None, conditions: str,
                bbq_limit: int | None, out: Path) -> None:
    """Write the processed items (category, id, polarity, condition, context, question, choices, target and
    unknown index) as JSONL, with every excluded row and why.

    \b
    publish-pruned bbq prepare --bbq-path ../shared/data/bbq --bbq-categories all --out bbq/
    """
    from .evaluation import bbq_categories as parse_categories
    from .measure.bbq import bbq_source, load_bbq, write_prepared

    def action() -> None:
        if bbq_limit is not None and bbq_limit < 1:
            raise SettingsError("--bbq-limit must be at least 1")
        bbq = load_bbq(bbq_source(bbq_path), parse_categories(bbq_categories), tuple(_items(conditions)), bbq_limit)
        if not bbq.items:
            raise SettingsError("no usable BBQ items in these files for these categories and conditions")
        paths = write_prepared(bbq, out)
        if output_flags(ctx).json:
            print_json({"items": len(bbq.items), "excluded": len(bbq.excluded),
                        "files": {kind: str(path) for kind, path in paths.items()}})
        else:
            click.echo(f"{len(bbq.items)} items, {len(bbq.excluded)} excluded → {paths['items']}")

    _guarded(ctx, action)


def register_measure_commands(group: click.Group) -> None:
    for command in (eval_command, latency_command, bbq_group):
        group.add_command(command)
