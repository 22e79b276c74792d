"""One invocation of the main command: pick the Hub, check the token, run the pipeline, publish.

    >>> outcome = run_and_publish(settings, PublishTarget(mode="local", local_dir=Path("local-hub")), options)
    >>> outcome.publish.url

No printing here: the CLI turns the outcome into a summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .card.lint import lint_card
from .card.plots import PLOTS_DIR
from .errors import HubAuthError, OutputDirError
from .hub.auth import resolve_token
from .hub.extras import inherited_gate
from .hub.local import LOCAL_USER
from .hub.publish import PublishRecord, PushOptions, check_write_access, publish_run
from .model_io import digest_files
from .pipeline import RunOptions, RunOutcome, eval_files, run_pipeline
from .resources import MEASUREMENT_DOC as MEASUREMENT_FILE
from .results import RESULTS_FILE, read_results, replacing, write_json_atomic, write_results
from .run_folder import CARD_FILE, STATE_DIR
from .settings import RunSettings, validate_repo_id

log = logging.getLogger(__name__)

PLACEHOLDER_NAMESPACE = "your-username"


@dataclass
class PublishTarget:
    mode: str = "hub"  # "hub": a real Hub (token from HF_TOKEN / login cache); "local": bundled emulator
    endpoint: str | None = None  # for mode "hub"
    local_dir: Path = Path("local-hub")  # for mode "local"
    dry_run: bool = False
    private: bool = False
    repo_id: str | None = None
    suffix: str | None = None
    token_file: Path | None = None  # else HF_TOKEN, else the login cache
    push: PushOptions = field(default_factory=PushOptions)  # branch, create_pr, tag, gated, collection, force


@dataclass
class Outcome:
    run: RunOutcome
    repo_id: str
    publish: PublishRecord | None  # None for a dry run
    hub_mode: str
    local_dir: Path | None


@contextlib.contextmanager
def hub_connection(target: PublishTarget) -> Iterator[tuple[object | None, str | None]]:
    """Yield (HfApi or None, namespace or None). None api: dry run without a usable token."""
    from huggingface_hub import HfApi

    if target.mode == "local":
        from .hub.local import local_hub

        with local_hub(target.local_dir) as (endpoint, token):
            api = HfApi(endpoint=endpoint, token=token)
            yield api, check_write_access(api)
        return
    api = HfApi(endpoint=target.endpoint, token=resolve_token(target.token_file))
    try:
        namespace = check_write_access(api)
    except HubAuthError:
        if not target.dry_run:
            raise
        api, namespace = None, None  # a dry run needs no token; the repo name gets a placeholder
    yield api, namespace


def run_and_publish(settings: RunSettings, target: PublishTarget, options: RunOptions) -> Outcome:
    """Check Hub access first (seconds), then run every stage, then push in one verified commit."""
    with hub_connection(target) as (api, namespace):
        repo_id = validate_repo_id(target.repo_id or settings.repo_name(namespace or PLACEHOLDER_NAMESPACE,
                                                                         target.suffix))
        if options.output_dir is None:
            options.output_dir = Path("runs") / repo_id.split("/")[1]
        options.repo_id = repo_id
        options.gated = target.push.gated
        run = run_pipeline(settings, options)
        return _lint_and_push(api, repo_id, run, target)


def push_existing_run(folder: Path, target: PublishTarget) -> Outcome:
    """Publish a finished run folder as it is (`publish-pruned push DIR`): nothing is recomputed.

    The checkpoint must still match the sha256 recorded in `results.json`, and the card must pass lint.
    """
    run = load_run(folder)
    with hub_connection(target) as (api, namespace):
        stored = run.results.settings.get("repo_id") or ""
        rehearsal = stored.split("/")[0] in (PLACEHOLDER_NAMESPACE, LOCAL_USER)
        if target.repo_id:
            repo_id = target.repo_id
        elif stored and not rehearsal and target.mode != "local":
            repo_id = stored
        else:  # a dry run without a token, or a `--hub local` rehearsal: the token owner's namespace here
            repo_id = f"{namespace or PLACEHOLDER_NAMESPACE}/{stored.split('/')[-1] or folder.name}"
        repo_id = validate_repo_id(repo_id)
        # The folder names where it is published for real: a dry run changes nothing, and a push to the local
        # emulator (a rehearsal under local-user/) leaves the card naming the repo it is meant for.
        if repo_id != stored and not target.dry_run and target.mode != "local":
            run = retarget_run(run, repo_id)
        return _lint_and_push(api, repo_id, run, target)


def retarget_run(run: RunOutcome, repo_id: str) -> RunOutcome:
    """The run folder made to name `repo_id`: results.json's `settings.repo_id`, and the card's "How to load"
    snippets and model name (front matter and model-index), rewritten in place (nothing recomputed); the digests
    follow.

    The card is rewritten rather than re-rendered: rendering again would need the card config and templates of
    the original run, which the folder does not keep.
    """
    old = run.results.settings.get("repo_id") or ""
    run.results.settings["repo_id"] = repo_id
    write_results(run.output_dir / RESULTS_FILE, run.results)
    card = run.card_path.read_text()
    if old:
        # the whole id only, never inside a longer one (org/x must not rewrite org/x-v2)
        card = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", repo_id, card)
        old_name, new_name = old.split("/")[-1], repo_id.split("/")[-1]
        # ModelCardData's model_name and model-index's name, in the front matter, whatever the line endings
        card = re.sub(rf"^(model_name: |- name: ){re.escape(old_name)}(\r?)$", rf"\g<1>{new_name}\g<2>", card,
                      flags=re.MULTILINE, count=2)
    with replacing(run.card_path) as tmp:
        tmp.write_text(card)
    run.files.update(digest_files(run.output_dir, [RESULTS_FILE, CARD_FILE]))
    return run


def load_run(folder: Path) -> RunOutcome:
    """A finished run folder, with its files checked against the digests in its results."""
    results = read_results(folder / RESULTS_FILE)
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise OutputDirError(f"{folder} has no {CARD_FILE}; render it with `publish-pruned card render`")
    current = digest_files(folder, sorted(results.files))
    changed = [name for name, digest in results.files.items() if current[name] != digest]
    if changed:
        raise OutputDirError(f"{folder}/{changed[0]} no longer matches the sha256 recorded in {RESULTS_FILE}")
    files = dict(current)
    card = card_path.read_text()  # the files the card links only, not whatever else lies in plots/
    linked = sorted(name for p in (folder / PLOTS_DIR).glob("*.png") if (name := str(p.relative_to(folder))) in card)
    if f"]({MEASUREMENT_FILE})" in card and (folder / MEASUREMENT_FILE).is_file():
        linked.append(MEASUREMENT_FILE)
    files.update(digest_files(folder, [RESULTS_FILE, CARD_FILE, *linked, *eval_files(folder)]))
    return RunOutcome(folder, card_path, results, files, skipped=["prune", "sparsity", "card"], warnings=[])


def _lint_and_push(api, repo_id: str, run: RunOutcome, target: PublishTarget) -> Outcome:
    lint_card(run.card_path.read_text(), run.results)
    gated, gate_warning = inherited_gate(target.push.gated, run.results.source)
    if gate_warning and gate_warning not in run.warnings:  # `push` of a finished run: the pipeline did not say it
        run.warnings.append(gate_warning)
    if target.dry_run:
        return Outcome(run, repo_id, None, target.mode, None)
    target = dataclasses.replace(target, push=dataclasses.replace(target.push, gated=gated))
    results = run.results
    message = (f"Publish {results.pruning.method} pruning at {results.pruning.target_sparsity:.0%} target "
               f"({results.sparsity.actual_sparsity:.2%} actual)")
    record = publish_run(api, repo_id, run.output_dir, run.files, private=target.private, message=message,
                         description=f"Made with publish-pruned from {results.source.identity}",
                         results=results, options=target.push)
    (run.output_dir / STATE_DIR).mkdir(exist_ok=True)  # a run folder copied without its state folder
    write_json_atomic(run.output_dir / STATE_DIR / "publish.json", dataclasses.asdict(record))
    return Outcome(run, repo_id, record, target.mode, target.local_dir if target.mode == "local" else None)
