"""One invocation of the main command: pick the Hub, check the token, run the pipeline, publish.

    >>> outcome = run_and_publish(settings, PublishTarget(mode="local", local_dir=Path("local-hub")), options)
    >>> outcome.publish.url

No printing here: the CLI turns the outcome into a summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .card.lint import lint_card
from .errors import HubAuthError
from .hub.publish import PublishRecord, check_write_access, publish_run
from .pipeline import STATE_DIR, RunOptions, RunOutcome, run_pipeline
from .results import write_json_atomic
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
    api = HfApi(endpoint=target.endpoint)
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
        run = run_pipeline(settings, options)
        lint_card(run.card_path.read_text(), run.results)
        if target.dry_run:
            return Outcome(run, repo_id, None, target.mode, None)
        message = (f"Publish {settings.method} pruning at {settings.sparsity:.0%} target "
                   f"({run.results.sparsity.actual_sparsity:.2%} actual)")
        record = publish_run(api, repo_id, run.output_dir, run.files, private=target.private, message=message,
                             description=f"Made with publish-pruned from {run.results.source.identity}")
        write_json_atomic(run.output_dir / STATE_DIR / "publish.json", dataclasses.asdict(record))
        return Outcome(run, repo_id, record, target.mode, target.local_dir if target.mode == "local" else None)
