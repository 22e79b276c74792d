"""Render the research-only model card from the bundled templates (Jinja, strict undefined).

    >>> text = render_card(read_results(Path("runs/x/results.json")), CardSettings())
    >>> text.startswith("---\\n")
    True

Rendering reads nothing but its arguments and the templates, so the same results and settings always give
the same bytes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml
from huggingface_hub import ModelCardData

from ..errors import CardError, describe_read_error
from ..prune import METHODS
from ..resources import MEASUREMENT_DOC as MEASUREMENT_FILE
from ..resources import measurement_doc
from ..resources import template_dir as bundled_template_dir
from ..results import Results, replacing
from .figures import (
    INTERVALS_TEXT,
    bias_caveat,
    category_coverage,
    decoding_text,
    exclusion_lines,
    follows_protocol,
    latency_caveat,
    literature_protocols,
    literature_rows,
    measurement_settings,
    metric_rows,
    not_measured,
    parse_rule_rows,
    parse_warnings,
    protocol_differences,
    srs_category_rows,
)
from .model_index import eval_results, hub_datasets
from .moe import moe_card
from .plots import write_plots
from .preview import write_preview

RESEARCH_ONLY_TAG = "research-only"


@dataclass(frozen=True)
class CardSettings:
    """What a lab says about its paper; kept in one YAML file per paper (`--card-config`)."""

    paper_title: str | None = None
    authors: str | None = None
    venue: str | None = None
    arxiv_id: str | None = None
    bibtex: str | None = None
    code_url: str | None = None
    contact: str | None = None
    extra_caveats: tuple[str, ...] = ()


def load_card_settings(path: Path | None) -> CardSettings:
    """Read a card config YAML; unknown keys are an error naming them."""
    if path is None:
        return CardSettings()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CardError(f"cannot read card config {path}: {describe_read_error(exc)}") from None
    if not isinstance(data, dict):
        raise CardError(f"card config {path} must be a YAML mapping")
    known = {f.name for f in dataclasses.fields(CardSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CardError(
            f"card config {path} has unknown keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    data["extra_caveats"] = tuple(data.get("extra_caveats") or ())
    return CardSettings(**data)


def card_metadata(results: Results, card: CardSettings) -> tuple[ModelCardData, list[str]]:
    """Front matter for the card, and warnings (e.g. a license that could not be inherited)."""
    source, warnings = results.source, []
    license_fields: dict = {"license": source.license}
    if source.license in (None, "other"):
        license_fields = {"license": "other", "license_name": source.license_name or "see-base-model"}
        base_page = f"https://huggingface.co/{source.base_model_id}" if source.base_model_id else None
        link = source.license_link or base_page
        if link:
            license_fields["license_link"] = link
        if source.license is None:
            warnings.append("the base model's license could not be found; the card says 'license: other'")
    metrics = results.metrics or {}
    # What Hub users search by. No `base_model_relation`: the Hub has no "pruned" relation, and a wrong one
    # (finetune, quantized, ...) would file the checkpoint under the base model's wrong tab.
    tags = ["pruning", "pruned", "sparsity", results.pruning.method, f"{results.pruning.structure}-sparsity",
            "llm-compression", "publish-pruned", RESEARCH_ONLY_TAG]
    if metrics.get("srs"):
        tags.insert(5, "bias-evaluation")
    if card.arxiv_id and follows_protocol(results):  # the paper's tag only on figures that follow its protocol
        tags.append(f"arxiv:{card.arxiv_id}")
    measured = eval_results(results)
    repo_id = results.settings.get("repo_id") or ""
    data = ModelCardData(
        model_name=repo_id.split("/")[-1] or None,
        eval_results=measured or None,
        base_model=source.base_model_id,
        datasets=hub_datasets(results) or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        language=list(source.language) or None,
        tags=tags,
        **license_fields,
        # the base's access terms (extra_gated_prompt, _fields, ...): a gated derivative asks for the same
        **{key: value for key, value in source.gating.items() if key.startswith("extra_gated_")},
    )
    return data, warnings


def write_card(results: Results, card: CardSettings, folder: Path, template_dir: Path | None = None,
               card_file: Path | None = None) -> tuple[Path, list[str], list[str]]:
    """Draw the plots into `folder`, render the card, write it, its `measurement.md` and its `preview.html`.

    Returns (card path, the files the card links — plots and `measurement.md` — relative to `folder`, warnings).
    Only the card and the files it links are meant for the Hub; the preview is for the user.
    """
    plots = write_plots(results, folder)
    text, warnings = render_card(results, card, template_dir, plots=plots)
    card_path = card_file or folder / "README.md"
    with replacing(folder / MEASUREMENT_FILE) as tmp:  # the definitions the card links, of this tool version
        tmp.write_text(measurement_doc(), encoding="utf-8")
    with replacing(card_path) as tmp:  # written whole or not at all: `push` publishes this file
        tmp.write_text(text)
    write_preview(card_path)
    return card_path, [*plots, MEASUREMENT_FILE], warnings


def template_environment(template_dir: Path | None = None) -> jinja2.Environment:
    """Jinja over the bundled templates (a user's `--template` folder first), strict about undefined values."""
    loaders = [jinja2.FileSystemLoader(str(template_dir))] if template_dir else []
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader([*loaders, jinja2.FileSystemLoader(str(bundled_template_dir()))]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_card(results: Results, card: CardSettings, template_dir: Path | None = None,
                plots: list[str] | None = None) -> tuple[str, list[str]]:
    """Render `model_card.md.j2`; returns the card text and warnings for the user."""
    metadata, warnings = card_metadata(results, card)
    env = template_environment(template_dir)
    env.filters["pct"] = lambda x, digits=2: f"{100 * x:.{digits}f} %"
    env.filters["thousands"] = lambda n: f"{n:,}"
    srs_run = ((results.metrics or {}).get("srs") or {}).get("pruned", {})
    context = {
        "front_matter": metadata.to_yaml(),
        "r": results.to_json(),
        "card": dataclasses.asdict(card),
        "method_description": METHODS[results.pruning.method].description if results.pruning.method in METHODS
        else "",
        "layer_summary": _layer_summary(results),
        "moe": moe_card(results),  # mixture-of-experts rows (card/moe.py); None for a dense model
        "metric_rows": metric_rows(results),
        "literature_rows": literature_rows(results),
        "literature_protocols": literature_protocols(results),
        "srs_rows": srs_category_rows(results),
        "not_measured": not_measured(results),
        "latency_caveat": latency_caveat(results),
        "bias_caveat": bias_caveat(results),
        "intervals_text": INTERVALS_TEXT,
        "parse_warnings": parse_warnings(results),
        "parse_rows": parse_rule_rows(results),
        "srs_parser": srs_run.get("parser", "protocol"),
        "srs_sampling": srs_run,
        "exclusion_lines": exclusion_lines(results),
        "category_coverage": category_coverage(results),
        "decoding_text": decoding_text(results),
        "protocol_differences": protocol_differences(results),
        "follows_protocol": follows_protocol(results),
        "measurement_settings": measurement_settings(results),
        "metrics": results.metrics or {},
        "plots": plots or [],
        "weight_files": {n: d for n, d in results.to_json()["files"].items() if n.endswith(".safetensors")},
        "weight_bytes": sum(d.size for n, d in results.files.items() if n.endswith(".safetensors")),
    }
    try:
        return env.get_template("model_card.md.j2").render(context), warnings
    except jinja2.UndefinedError as exc:
        raise CardError(f"card template references an undefined value: {exc.message}{_where(exc)}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise CardError(f"card template {exc.filename or exc.name}:{exc.lineno}: {exc.message}") from None


def _where(exc: Exception) -> str:
    """' (template.j2, line N)' from the traceback of a Jinja runtime error."""
    tb, found = exc.__traceback__, ""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(".j2"):
            found = f" ({Path(name).name}, line {tb.tb_lineno})"
        tb = tb.tb_next
    return found


def _layer_summary(results: Results) -> dict:
    layers = results.sparsity.layers
    values = [x.sparsity for x in layers]
    return {"count": len(layers), "min": min(values, default=0.0), "max": max(values, default=0.0)}
