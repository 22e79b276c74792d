"""Command line: `publish-pruned run --model ID --sparsity 0.5` (or without `run`) and the other commands.

Examples:

    publish-pruned run --model google/gemma-2-9b-it --sparsity 0.5
    publish-pruned --model ./my-model --sparsity 0.3 --dry-run          # the same job, without the verb
    publish-pruned run --model model.gguf --base-model-id org/name --sparsity 0.5 --hub local
    publish-pruned card render runs/x/results.json --json

Every command takes -v/-q/--json (`cli_output`), before or after its name, and exits with the codes listed
in `--help` (`errors.EXIT_CODES`).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from pathlib import Path

import click

from .cli_errors import fail, redact
from .cli_measure import (
    check_output_file,
    eval_options,
    eval_settings,
    placement_options,
    register_measure_commands,
)
from .cli_output import MainGroup, apply_conventions, output_flags, print_json
from .errors import EXIT_CODES, CardError, PublishPrunedError, SettingsError
from .hub.serve import serve_command
from .settings import DTYPES, TIE_POLICIES, RunSettings, validate_repo_id

_ENDPOINT = re.compile(r"https?://[^/\s:@]+(:\d{1,5})?(/\S*)?")


def _checked_endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _ENDPOINT.fullmatch(value):
        fail(SettingsError(f"--hub-endpoint must be an http(s) URL such as https://huggingface.co, got {value!r}"),
             False)
    return value


hub_endpoint_option = click.option("--hub-endpoint", envvar="HF_ENDPOINT", callback=_checked_endpoint,
                                   help="Hub URL [default: https://huggingface.co].")


def recorded_command() -> str:
    """This invocation as typed, for results.json and the card: tokens and URL credentials removed."""
    return redact(" ".join(shlex.quote(a) for a in ["publish-pruned", *sys.argv[1:]]))


def quiet_libraries() -> None:
    """No progress bars from transformers or huggingface_hub (ours are switched off by the pipeline)."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()


# Mixture-of-experts options of the main job (`moe_settings` hands them to RunSettings).
moe_options = [
    click.option("--moe-calibration", type=click.Choice(["routed", "all"]), default="routed",
                 help="Wanda/SparseGPT on a mixture-of-experts model: routed = each expert's statistics from the "
                 "tokens its router sends it, weighted by routing weight (experts under 10 % of a uniform share "
                 "get every token); all = every token to every expert."),
    click.option("--experts-keep", type=float, help="--method expert-drop: fraction of each layer's routed experts "
                 "to keep (ceil(F x experts)), e.g. 0.5."),
    click.option("--experts-keep-n", type=int, help="--method expert-drop: routed experts to keep per layer."),
    click.option("--expert-saliency", type=click.Choice(["reap", "frequency"]), default="reap",
                 help="--method expert-drop: rank experts by REAP (mean routing weight x expert output norm over "
                 "the tokens routed to it) or by how many tokens the router sends them."),
]


def moe_settings(opts: dict) -> dict:
    return {key: opts[key] for key in ("moe_calibration", "experts_keep", "experts_keep_n", "expert_saliency")}


def method_names() -> list[str]:
    from .prune import METHODS

    return sorted(METHODS)


token_file_option = click.option(
    "--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), envvar="PUBLISH_PRUNED_TOKEN_FILE",
    help="Read the Hub token from this file [default: HF_TOKEN, then the login cache].")


def hub_options(fn):
    """Where to publish: shared by the main command and `push`."""
    options = [
        click.option("--repo-id", envvar="PUBLISH_PRUNED_REPO_ID",
                     help="Target repo [default: <you>/<base-name>-<method>-s<NN>[-<suffix>]]."),
        click.option("--private", is_flag=True, help="Create the Hub repo private."),
        click.option("--dry-run", is_flag=True, help="Do everything but write to the Hub."),
        click.option("--hub", "hub_mode", type=click.Choice(["hub", "local"]), default="hub",
                     envvar="PUBLISH_PRUNED_HUB",
                     help="local: start the bundled Hub emulator and publish there (a rehearsal, no token)."),
        click.option("--hub-dir", type=click.Path(path_type=Path), default=Path("local-hub"),
                     envvar="PUBLISH_PRUNED_HUB_DIR", help="Where --hub local keeps its repos."),
        hub_endpoint_option,
        token_file_option,
        click.option("--branch", default="main", help="Commit to this branch (created from main; may contain '/')."),
        click.option("--create-pr", is_flag=True, help="Open a pull request against --branch instead of committing."),
        click.option("--tag", help="Tag the published commit (may contain '/')."),
        click.option("--gated", type=click.Choice(["auto", "manual"]), help="Gate access to the repo."),
        click.option("--collection", help="Add the model to this collection (a slug, or a title: created if missing)."),
        click.option("--force", is_flag=True, help="Write over a card publish-pruned did not write or another base "
                     "model's repo; move an existing tag."),
        click.option("--no-verify-sparsity", is_flag=True, help="Skip re-counting zeros of a downloaded shard."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def publish_target(opts: dict):
    from .hub.publish import PushOptions
    from .runner import PublishTarget

    push = PushOptions(branch=opts["branch"], create_pr=opts["create_pr"], tag=opts["tag"], gated=opts["gated"],
                       collection=opts["collection"], force=opts["force"],
                       verify_sparsity=not opts["no_verify_sparsity"])
    return PublishTarget(
        mode=opts["hub_mode"], endpoint=opts["hub_endpoint"], local_dir=opts["hub_dir"], dry_run=opts["dry_run"],
        private=opts["private"], repo_id=opts["repo_id"] and validate_repo_id(opts["repo_id"]),
        suffix=opts.get("suffix"), token_file=opts["token_file"], push=push,
    )


def report(outcome, as_json: bool) -> None:
    for warning in outcome.run.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(summary_data(outcome))
    else:
        click.echo(redact(summary_text(outcome)))


EXIT_CODES_HELP = "\b\nExit codes (every command):\n" + "\n".join(f"  {code:<4} {meaning}"
                                                                  for code, meaning in EXIT_CODES.items())
CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def run_options(fn):
    """The main job's options: one definition for `publish-pruned run ...` and `publish-pruned ...` alike."""
    options = [
        click.option("--model", envvar="PUBLISH_PRUNED_MODEL", help="Base model: a Hub id, a local transformers "
                     "folder, or a .gguf file."),
        click.option("--sparsity", type=float, help="Target fraction of prunable weights to zero, in (0, 1)."),
        click.option("--method", type=click.Choice(method_names()), default="magnitude", help="Pruning method."),
        click.option("--magnitude-ties", "tie_policy", type=click.Choice(TIE_POLICIES), default="exact",
                     help="exact: zero exactly floor(n*s) weights per matrix; threshold: zero every |w| <= the k-th "
                     "smallest (the study's behaviour; ties push sparsity above target)."),
        click.option("--structure", default="unstructured", envvar="PUBLISH_PRUNED_STRUCTURE",
                     help="unstructured, or N:M (N zeros in every M consecutive inputs), e.g. 2:4 (sparsity 0.5)."),
        click.option("--calibration-dataset", envvar="PUBLISH_PRUNED_CALIBRATION_DATASET",
                     help="Wanda/SparseGPT calibration text: a Hub dataset [default: allenai/c4, en, streamed] or a "
                     "local .json/.jsonl/.json.gz of {\"text\": ...} rows."),
        click.option("--calibration-samples", type=int, default=128, help="Calibration sequences."),
        click.option("--calibration-seq-len", type=int, default=2048, help="Tokens per calibration sequence."),
        click.option("--calibration-revision", help="Branch, tag or commit of a Hub calibration dataset (default: "
                     "main, pinned to its commit in the results)."),
        *moe_options,
        click.option("--seed", type=int, default=42, help="Seed of random masks and of calibration sampling."),
        click.option("--revision", help="Branch, tag or commit of a Hub base model (default: main, pinned to its "
                     "commit)."),
        click.option("--base-model-id", help="Hub id of a local/GGUF base model, for the card's base_model and repo "
                     "name."),
        click.option("--suffix", help="Appended to the default repo name, e.g. 'pia'."),
        click.option("--output-dir", type=click.Path(path_type=Path), help="Run folder [default: "
                     "./runs/<repo-name>]."),
        click.option("--overwrite", is_flag=True, help="Replace an output folder that holds a different run."),
        click.option("--dtype", type=click.Choice(DTYPES), default="auto", help="Weights dtype (auto: as the "
                     "checkpoint)."),
        placement_options,
        click.option("--shard-size", default="5GB", help="Largest safetensors shard."),
        click.option("--card-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="YAML with paper title, authors, arXiv id, BibTeX, code URL, extra caveats."),
        click.option("--template", "template_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Folder of card templates overriding the bundled ones (any subset)."),
        click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code to run."),
        click.option("--trust-pickled-weights", is_flag=True, help="Allow pickled .bin weights (can run arbitrary "
                     "code)."),
        hub_options,
        eval_options,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(cls=MainGroup, invoke_without_command=True, context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@run_options
@click.version_option(package_name="publish-pruned")
@click.pass_context
def main(ctx: click.Context, **opts) -> None:
    """Prune a model, measure it, render a research-only card, and publish it to the Hub: `run`, or the same
    options without it. Env vars: PUBLISH_PRUNED_<OPTION> where shown.

    \b
    publish-pruned run --model google/gemma-2-9b-it --sparsity 0.5
    publish-pruned --model ./folder --sparsity 0.5 --dry-run
    publish-pruned --json run --model m.gguf --base-model-id org/m --sparsity 0.5 --hub local
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = output_flags(ctx).verbose
    if ctx.invoked_subcommand is None:
        main_job(ctx, opts)
        return
    given = [p.opts[0] for p in ctx.command.params if isinstance(p, click.Option) and p.expose_value
             and ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]
    if given:  # click would hand them to the main job, which does not run: refuse rather than ignore them
        fail(SettingsError(f"{', '.join(given)} before `{ctx.invoked_subcommand}` would be ignored: give "
                           f"{ctx.invoked_subcommand}'s options after its name (only -v, -q and --json go before)"),
             False)


@main.command("run", context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@run_options
@click.pass_context
def run_command(ctx: click.Context, **opts) -> None:
    """Prune a model, measure it, render a research-only card, and publish it to the Hub (the main job, also
    run by `publish-pruned` with these options and no command name).

    \b
    publish-pruned run --model google/gemma-2-9b-it --sparsity 0.5
    publish-pruned run --model ./folder --sparsity 0.5 --dry-run --json
    """
    main_job(ctx, opts)


def main_job(ctx: click.Context, opts: dict) -> None:
    """The main job, for `run` and the bare form alike: its help without options, else the run and its summary."""
    if not opts["model"] and opts["sparsity"] is None:
        click.echo(ctx.get_help())
        ctx.exit(0)
    drops_experts = opts["method"] == "expert-drop"  # takes --experts-keep[-n] instead (RunSettings checks)
    if not opts["model"] or (opts["sparsity"] is None and not drops_experts):
        missing = "--sparsity (e.g. --sparsity 0.5)" if opts["model"] else "--model (a Hub id, folder or .gguf)"
        fail(SettingsError(f"missing {missing}; see {ctx.command_path} -h"), False)
    flags = output_flags(ctx)
    opts = {**opts, "verbose": flags.verbose, "quiet": flags.quiet, "as_json": flags.json}
    try:
        if opts["quiet"] or opts["as_json"]:
            quiet_libraries()
        run_main(opts)
    except (PublishPrunedError, KeyboardInterrupt, Exception) as exc:
        fail(exc, bool(opts["verbose"]))


def run_main(opts: dict) -> None:
    from .card import load_card_settings
    from .pipeline import DEFAULT_CACHE_DIR, RunOptions
    from .runner import run_and_publish

    settings = RunSettings(
        model=opts["model"], sparsity=opts["sparsity"], method=opts["method"], revision=opts["revision"],
        tie_policy=opts["tie_policy"], seed=opts["seed"], dtype=opts["dtype"], device=opts["device"],
        device_map=opts["device_map"], max_memory=opts["max_memory"],
        base_model_id=opts["base_model_id"], trust_remote_code=opts["trust_remote_code"],
        trust_pickled_weights=opts["trust_pickled_weights"], shard_size=opts["shard_size"],
        structure=opts["structure"], calibration_dataset=opts["calibration_dataset"],
        calibration_samples=opts["calibration_samples"], calibration_seq_len=opts["calibration_seq_len"],
        calibration_revision=opts["calibration_revision"], **moe_settings(opts),
    )
    if not (opts["quiet"] or opts["as_json"]):
        from .placement import device_notice

        click.echo(device_notice(opts["device"], settings), err=True)
    options = RunOptions(
        evaluation=eval_settings(opts), cache_dir=opts["cache_dir"] or DEFAULT_CACHE_DIR,
        output_dir=opts["output_dir"], command=recorded_command(),
        card=load_card_settings(opts["card_config"]), template_dir=opts["template_dir"],
        overwrite=opts["overwrite"], progress=not (opts["quiet"] or opts["as_json"]), endpoint=opts["hub_endpoint"],
    )
    report(run_and_publish(settings, publish_target(opts), options), opts["as_json"])


def summary_data(outcome) -> dict:
    results, publish = outcome.run.results, outcome.publish
    return {
        "repo_id": outcome.repo_id,
        "dry_run": publish is None,
        "url": publish.url if publish else None,
        "commit": publish.commit if publish else None,
        "changed": publish.changed if publish else None,
        "revision": publish.revision if publish else None,
        "pr_url": publish.pr_url if publish else None,
        "tag": publish.tag if publish else None,
        "collection": publish.collection if publish else None,
        "committed": publish.committed if publish else [],
        "deleted": publish.deleted if publish else [],
        "sparsity_check": publish.sparsity_check if publish else None,
        "output_dir": str(outcome.run.output_dir),
        "card": str(outcome.run.card_path),
        "results": str(outcome.run.output_dir / "results.json"),
        "method": results.pruning.method,
        "target_sparsity": results.pruning.target_sparsity,
        "actual_sparsity": results.sparsity.actual_sparsity,
        "zero_params": results.sparsity.zero_params,
        "prunable_params": results.sparsity.prunable_params,
        "prune_time_s": results.pruning.prune_time_s,
        "device": results.settings.get("device"),
        "device_map": results.settings.get("device_map"),
        "skipped_stages": outcome.run.skipped,
    }


def expert_drop_lines(results) -> list[str]:
    """The summary's line for expert dropping: experts kept and parameters before/after (else nothing)."""
    drop = (results.pruning.moe or {}).get("expert_drop")
    if not drop:
        return []
    return [f"  experts kept     {drop['experts_kept']} of {drop['experts_before']} per layer ({drop['saliency']}); "
            f"parameters {drop['params_before']:,} → {drop['params_after']:,}"]


def summary_text(outcome) -> str:
    results, publish, run = outcome.run.results, outcome.publish, outcome.run
    weight_bytes = sum(d.size for n, d in results.files.items() if n.endswith(".safetensors"))
    lines = [
        f"publish-pruned: {results.source.base_model_id or results.source.reference} — {results.pruning.method} "
        f"pruning, target {results.pruning.target_sparsity:.2%}",
        f"  actual sparsity  {results.sparsity.actual_sparsity:.4%} ({results.sparsity.zero_params:,} of "
        f"{results.sparsity.prunable_params:,} prunable weights zeroed; counted on the saved files)",
        *expert_drop_lines(results),
        f"  prune time       {results.pruning.prune_time_s:.2f} s",
        f"  device           {results.settings.get('device_map') or results.settings.get('device')} "
        f"({results.environment.get('machine', '?')})",
        f"  checkpoint       {run.output_dir} ({weight_bytes / 1e6:.1f} MB of safetensors)",
        f"  card             {run.card_path}",
    ]
    if run.skipped:
        lines.append(f"  resumed          reused finished stages: {', '.join(run.skipped)}")
    if publish is None:
        lines.append(f"  dry run          nothing pushed; would publish to {outcome.repo_id}")
    else:
        state = "new commit" if publish.changed else "no change: the Hub already held these files"
        lines.append(f"  published        {publish.url} @ {publish.commit[:12]} on {publish.revision} ({state}; "
                     f"{publish.verified_files} files verified)")
        if publish.changed:
            lines.append(f"  committed        {len(publish.committed)} file(s) uploaded or changed"
                         + (f", {len(publish.deleted)} stale removed" if publish.deleted else ""))
        if publish.sparsity_check:
            check = publish.sparsity_check
            lines.append(f"  re-measured      {check['shard']} from the Hub: {check['zeros']:,} zeros in "
                         f"{check['layers']} pruned tensors, as recorded")
        for label, value in (("pull request", publish.pr_url), ("tag", publish.tag),
                             ("collection", publish.collection)):
            if value:
                lines.append(f"  {label:<16} {value}")
        if outcome.local_dir is not None:
            lines.append(f"  local hub        data in {outcome.local_dir}/ — serve it again with "
                         f"`HF_TOKEN=<any secret> publish-pruned hub serve --root {outcome.local_dir}`")
    return "\n".join(lines)


@main.group()
def card() -> None:
    """Model cards: render from results.json."""


@card.command("render")
@click.argument("results_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--all", "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Render every card of a collection manifest (model_cards/<name>.yaml) into the folder beside it.")
@click.option("--check", is_flag=True,
              help="With --all: write nothing; list the cards that would change and exit 1 if there are any.")
@click.option("--card-config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--template", "template_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here [default: README.md beside the results file].")
@click.pass_context
def card_render(ctx: click.Context, results_file: Path | None, manifest: Path | None, check: bool,
                card_config: Path | None, template_dir: Path | None, output: Path | None) -> None:
    """Re-render the card of a run from its results.json, or every card of a collection, recomputing nothing.

    \b
    publish-pruned card render runs/x/results.json
    publish-pruned card render --all model_cards/rath2026-pia.yaml
    publish-pruned card render --all model_cards/rath2026-pia.yaml --check
    """
    verbose = bool(ctx.obj["verbose"])
    if manifest is not None:
        if results_file is not None or card_config is not None or output is not None:
            fail(SettingsError("--all renders a whole collection from its manifest: give no RESULTS_FILE, "
                               "--card-config or -o (the manifest holds the card config)"), verbose)
        from .card.collection import render_collection

        try:
            paths = render_collection(manifest, check=check, template_dir=template_dir)
        except (PublishPrunedError, KeyboardInterrupt, Exception) as exc:
            fail(exc, verbose)
        differ = f"{len(paths)} card(s) differ from {manifest}; re-render them with " \
                 f"`publish-pruned card render --all {manifest}`" if check and paths else None
        if output_flags(ctx).json:
            print_json({"cards": [str(p) for p in paths], "check": check,
                        **({"error": differ, "exit_code": 1} if differ else {})})
        else:
            for path in paths:
                click.echo(str(path))
            if differ:
                click.echo(f"error: {differ}", err=True)
        sys.exit(1 if differ else 0)
    if check:
        fail(SettingsError("--check applies to --all MANIFEST only"), verbose)
    if results_file is None:
        fail(SettingsError("give RESULTS_FILE, or --all MANIFEST to render a collection"), verbose)
    from .card import load_card_settings, write_card
    from .results import read_results

    try:
        results = read_results(results_file)
        target, _, warnings = write_card(results, load_card_settings(card_config), results_file.parent,
                                         template_dir, card_file=output)
    except (PublishPrunedError, KeyboardInterrupt, Exception) as exc:
        fail(exc, verbose)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if output_flags(ctx).json:
        print_json({"card": str(target), "warnings": list(warnings)})
    else:
        click.echo(str(target))


@main.command()
@click.option("--model", required=True, help="Hub id, local folder (config.json is enough) or .gguf file.")
@click.option("--sparsity", type=float, default=0.5, help="Target sparsity for the expected zero count.")
@click.option("--structure", default="unstructured", help="unstructured or N:M, e.g. 2:4.")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", help="Weights dtype for the memory estimate.")
@click.option("--revision", help="Branch, tag or commit of a Hub model.")
@click.option("--method", type=click.Choice(method_names()), default="magnitude", help="Method, for the time estimate.")
@click.option("--device", default="auto", envvar="PUBLISH_PRUNED_DEVICE",
              help="Device the run would use, for the time estimate (auto: a CUDA GPU if present, else the CPU).")
@hub_endpoint_option
@click.pass_context
def plan(ctx: click.Context, model: str, sparsity: float, structure: str, dtype: str, revision: str | None,
         method: str, device: str, hub_endpoint: str | None) -> None:
    """What pruning would do, from the config alone: no weights are downloaded (meta device).

    \b
    publish-pruned plan --model google/gemma-2-9b-it
    publish-pruned plan --model ./my-model --structure 2:4 --json
    """
    from .estimates import estimate_here, estimates_table
    from .plan import plan_model, plan_table

    try:
        settings = RunSettings(model=model, sparsity=sparsity, structure=structure, device=device)  # main's checks
        result = plan_model(model, sparsity, structure=structure, dtype=dtype, revision=revision,
                            endpoint=hub_endpoint)
        stages, basis = estimate_here(result, settings.device, method)
    except (PublishPrunedError, KeyboardInterrupt, Exception) as exc:
        fail(exc, bool(ctx.obj["verbose"]))
    if output_flags(ctx).json:
        print_json({**dataclasses.asdict(result), "device": settings.device,
                    "estimates": {"basis": basis, "stages": [dataclasses.asdict(s) for s in stages]}})
    else:
        click.echo(plan_table(result))
        click.echo(f"  device             {settings.device}" + (" (auto)" if device == "auto" else ""))
        click.echo(estimates_table(stages, basis))


def _too_big_here(artifact, repo_id: str, endpoint: str | None, token: str | None):
    """`release.Planned` (the artifact's config-only plan) when its model does not fit this machine, else None."""
    from .estimates import estimate_here, estimates_table
    from .plan import plan_model, plan_table
    from .release import Planned, fits_here

    settings = artifact.settings()
    found = plan_model(settings.model, settings.sparsity, structure=settings.structure, dtype=settings.dtype,
                       revision=settings.revision, endpoint=endpoint, token=token)
    fits, why = fits_here(found.weights_bytes, settings.device)
    if fits:
        return None
    stages, basis = estimate_here(found, settings.device, settings.method)
    return Planned(repo_id, f"not built here: {why}\n{plan_table(found)}\n{estimates_table(stages, basis)}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@hub_options
@click.pass_context
def push(ctx: click.Context, run_dir: Path, **opts) -> None:
    """Publish a finished run folder as it is: one verified commit, nothing recomputed.

    \b
    publish-pruned push runs/gemma-2-9b-it-magnitude-s50
    publish-pruned push runs/x --hub local
    """
    from .runner import push_existing_run

    try:
        report(push_existing_run(run_dir, publish_target(opts)), output_flags(ctx).json)
    except (PublishPrunedError, KeyboardInterrupt, Exception) as exc:
        fail(exc, bool(ctx.obj["verbose"]))


@card.command("lint")
@click.argument("card_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--results", "results_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="results.json to check the card's figures against [default: beside the card, if present].")
@click.pass_context
def card_lint(ctx: click.Context, card_file: Path, results_file: Path | None) -> None:
    """Check a card offline: front matter, license, base_model, research-only tag and warning, figures.

    \b
    publish-pruned card lint runs/x/README.md
    """
    from .card.lint import lint_card
    from .results import read_results

    try:
        beside = card_file.with_name("results.json")
        results_file = results_file or (beside if beside.is_file() else None)
        try:
            text = card_file.read_text()
        except UnicodeDecodeError:
            raise CardError(f"{card_file} is not UTF-8 text") from None
        lint_card(text, read_results(results_file) if results_file else None)
    except (PublishPrunedError, Exception) as exc:
        fail(exc, bool(ctx.obj["verbose"]))
    if output_flags(ctx).json:
        print_json({"card": str(card_file), "ok": True, "results": str(results_file) if results_file else None})
    else:
        click.echo(f"{card_file}: ok" + (f" (figures match {results_file})" if results_file else ""))


@card.command("sync")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only show each card's diff against the Hub.")
@click.option("--force", is_flag=True, help="Also replace cards publish-pruned did not write.")
@click.option("--revision", default="main", help="Branch whose README.md is compared and updated.")
@click.option("--diff-out", type=click.Path(dir_okay=False, path_type=Path), help="Also write every diff here.")
@hub_endpoint_option
@token_file_option
@click.pass_context
def card_sync(ctx: click.Context, run_dirs: tuple[Path, ...], dry_run: bool, force: bool, revision: str,
              diff_out: Path | None, hub_endpoint: str | None, token_file: Path | None) -> None:
    """Bring the Hub's cards in line with the run folders' (README.md only; a diff per repo).

    \b
    publish-pruned card sync runs/* --dry-run
    publish-pruned card sync runs/a runs/b
    """
    from huggingface_hub import HfApi

    from .card.lint import lint_card
    from .hub.auth import resolve_token
    from .hub.card_sync import load_card_items, sync_cards, sync_exit_code
    from .hub.publish import check_write_access
    from .results import read_results

    try:
        check_output_file(diff_out, "--diff-out")
        items = load_card_items(run_dirs)
        for folder, (_, text) in zip(run_dirs, items, strict=True):
            lint_card(text, read_results(folder / "results.json"))
        api = HfApi(endpoint=hub_endpoint, token=resolve_token(token_file))
        if not dry_run:
            check_write_access(api)
        syncs = sync_cards(api, items, dry_run=dry_run, revision=revision, force=force)
    except (PublishPrunedError, KeyboardInterrupt, Exception) as exc:
        fail(exc, bool(ctx.obj["verbose"]))
    diffs = "".join(s.diff for s in syncs)
    if diff_out is not None:
        diff_out.write_text(diffs)
    if output_flags(ctx).json:
        print_json({"repos": [dataclasses.asdict(s) for s in syncs], "exit_code": sync_exit_code(syncs)})
    else:
        click.echo(redact(diffs), nl=False)
        for s in syncs:
            click.echo(redact(f"{s.status:<12} {s.repo_id}" + (f" @ {s.commit[:12]}" if s.commit else "")
                              + (f": {s.error}" if s.error else "")), err=True)
    sys.exit(sync_exit_code(syncs))


@main.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--shard", help="Run only shard i of n (1-based), e.g. 2/4.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON summary here.")
@click.option("--output-root", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              help="Run folders go to <output-root>/<repo-name>.")
@click.option("--dry-run", is_flag=True, help="Build every artifact and its card; push nothing.")
@click.option("--rebuild", is_flag=True, help="Also run artifacts the Hub already holds identically.")
@click.option("--preview", is_flag=True, help="A dry run where the models fit this machine, and only the "
              "config-only plan (no weights downloaded) for those that do not: a pull request's preview on any runner.")
@hub_endpoint_option
@token_file_option
@click.pass_context
def release(ctx: click.Context, manifest: Path, shard: str | None, summary_path: Path | None, output_root: Path,
            dry_run: bool, rebuild: bool, preview: bool, hub_endpoint: str | None, token_file: Path | None) -> None:
    """Publish a grid (models x methods x sparsities) from a YAML manifest; skips what is already published.

    \b
    publish-pruned release release.yaml --dry-run
    publish-pruned release release.yaml --shard 2/4 --summary out/summary.json
    publish-pruned release release.yaml --preview          # what a pull request's CI runs on a small runner
    """
    from huggingface_hub import HfApi

    from .hub.auth import resolve_token
    from .hub.publish import check_write_access, finish_published
    from .local_paths import recorded_path
    from .model_io import resolve_source
    from .pipeline import RunOptions
    from .prune.calibration import moved_calibration
    from .release import load_manifest, published_commit, run_release, select_shard, summary_lines, write_summary
    from .runner import PLACEHOLDER_NAMESPACE, PublishTarget, run_and_publish

    dry_run = dry_run or preview
    try:
        check_output_file(summary_path, "--summary")
        plan = load_manifest(manifest)
        todo = select_shard(plan.artifacts(), shard)
        push_options, private = plan.push_options()
        token = resolve_token(token_file)
        api = HfApi(endpoint=hub_endpoint, token=token)
        namespace = plan.namespace or (None if dry_run else check_write_access(api))
    except (PublishPrunedError, KeyboardInterrupt, Exception) as exc:
        fail(exc, bool(ctx.obj["verbose"]))
    quiet_libraries()

    pins: dict[tuple[str, str | None], str | None] = {}

    def base_pin(settings: RunSettings) -> str | None:
        """The base's commit or content hash, resolved once per model (a local folder is hashed whole)."""
        key = (settings.model, settings.revision)
        if key not in pins:
            source = resolve_source(settings, endpoint=hub_endpoint, token=token)
            pins[key] = source.revision or source.content_sha256
        return pins[key]

    def calibration_moved(settings: RunSettings, used: str) -> bool:
        """Whether a calibrated method's Hub dataset holds other data than commit `used` (the Hub's answers are
        kept per process by `moved_dataset`; a failed check is asked again)."""
        return settings.uses_calibration and moved_calibration(settings.calibration_dataset,
                                                               settings.calibration_revision, used) is not None

    def published(artifact):
        if dry_run or rebuild or push_options.create_pr:  # a pull request's fate is not ours to read
            return None
        repo_id, settings = artifact.repo_id(namespace), artifact.settings()
        commit = published_commit(api, repo_id, artifact, base=base_pin(settings),
                                  calibration_moved=lambda used: calibration_moved(settings, used),
                                  revision=push_options.branch)
        if commit is None:
            return None
        finish_published(api, repo_id, commit, push_options, private=private)  # this manifest's tag, gate, collection
        return repo_id, commit

    def run_one(artifact):
        repo_id = artifact.repo_id(namespace or PLACEHOLDER_NAMESPACE)
        if preview:
            planned = _too_big_here(artifact, repo_id, hub_endpoint, token)
            if planned is not None:
                return planned
        target = PublishTarget(endpoint=hub_endpoint, dry_run=dry_run, private=private,
                               repo_id=repo_id if namespace else None, suffix=plan.suffix, token_file=token_file,
                               push=push_options)
        options = RunOptions(output_dir=output_root / repo_id.split("/")[1], progress=False, endpoint=hub_endpoint,
                             command=f"publish-pruned release {recorded_path(manifest)} # {artifact.published_key}",
                             evaluation=plan.evaluation_settings())
        return run_and_publish(artifact.settings(), target, options)

    flags = output_flags(ctx)

    def progress(result) -> None:
        if not (flags.quiet or flags.json):
            click.echo(redact(f"{result.status:<10} {result.key} {result.repo_id or ''} {result.error or ''}"),
                       err=True)

    summary = run_release(todo, run_one, published=published, shard=shard, on_result=progress)
    if summary_path is not None:
        write_summary(summary_path, summary)
    if flags.json:
        print_json({**summary.to_json(), "exit_code": summary.exit_code})
    else:
        click.echo(redact("\n".join(summary_lines(summary))))
    sys.exit(summary.exit_code)


@main.group()
def hub() -> None:
    """The bundled Hub emulator."""


hub.add_command(serve_command)
register_measure_commands(main)
apply_conventions(main)  # -v/-q/--json and env vars in --help, on every command above
