"""Cards as code: a published collection's cards, rendered from one manifest and checked in beside it.

A manifest (`model_cards/<name>.yaml`) names the base models, methods and target sparsities of a collection,
the paper's card settings, and the figures the paper itself reported for some checkpoints. Every
checkpoint's card is rendered from `templates/reported_card.md.j2` to `model_cards/<name>/<repo-name>/README.md`:

    >>> paths = render_collection(Path("model_cards/rath2026-pia.yaml"))           # (re)write all 36 cards
    >>> render_collection(Path("model_cards/rath2026-pia.yaml"), check=True)       # what would change
    []

Reported figures are the paper's, quoted as strings exactly as printed ("13.10", "5,477,545"); the cards
show them in a table marked "reported by the paper, not measured by publish-pruned", and name the figures
that were not reported instead of computing or guessing them. Rendering reads only the manifest and the
templates, so the same inputs always give the same bytes.

Manifest keys: `collection` (display name), `namespace`, `suffix`, `card` (the `CardSettings` fields inline)
or `card_config` (a card-config YAML, relative to the manifest), `base_models` (`id`, `license`,
`license_link`, `license_name`, `language`), `methods` (name → optional `description`, `scope`, `settings`
rows), `sparsities` (whole percents) and `reported` (repo name → figures, see `REPORTED_FIELDS`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from huggingface_hub import ModelCardData

from ..errors import CardError, SettingsError, describe_read_error
from ..prune import METHODS
from ..prune.scope import SCOPE_DESCRIPTION
from ..settings import validate_repo_id
from .render import RESEARCH_ONLY_TAG, CardSettings, load_card_settings, template_environment

TEMPLATE = "reported_card.md.j2"

# Used when the method registry has no description for a method (and the manifest gives none).
FALLBACK_DESCRIPTIONS = {
    "wanda": (
        "Wanda (Sun et al., ICLR 2024) scores each weight by |W_ij|·‖X_j‖₂, the weight's magnitude times the L2 "
        "norm of its input feature over a small calibration set, and zeroes the lowest-scoring weights of every "
        "output row, layer by layer. It needs calibration data but no retraining or weight update."
    ),
}

# Field → what the card calls it when it was not reported. Values are strings, verbatim from the paper.
REPORTED_FIELDS = {
    "actual_sparsity": "actual sparsity",  # percent, e.g. "50.11"
    "actual_sparsity_note": None,  # why the actual sparsity differs from the target (text)
    "zero_params": "zeroed parameters",  # e.g. "4,170,814,390"
    "prunable_params": None,  # shown with zero_params
    "prune_time_s": "prune wall time",
    "perplexity": "perplexity",
    "perplexity_dense": None,  # reference for the perplexity rows
    "perplexity_change": "perplexity change vs dense",  # percent with sign, e.g. "+504.6"
    "srs": "stereotype reliance (SRS) by BBQ category",  # mapping category → value
    "srs_overall": "overall SRS",
    "srs_overall_dense": None,
    "new_bias_emergence": "new-bias emergence",  # percent
    "latency_s": "latency",
}
_NUMBER = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?")
_MANIFEST_KEYS = {"collection", "namespace", "suffix", "card", "card_config", "base_models", "methods",
                  "sparsities", "reported"}


@dataclass(frozen=True)
class BaseModel:
    """A base model of the collection; the license is inherited by every checkpoint made from it."""

    id: str
    license: str
    license_link: str | None = None
    license_name: str | None = None
    language: tuple[str, ...] = ("en",)

    @property
    def name(self) -> str:
        return self.id.split("/")[-1]


@dataclass(frozen=True)
class MethodSpec:
    """How the collection's checkpoints were pruned with one method; `settings` are extra configuration rows."""

    name: str
    description: str | None = None
    scope: str | None = None
    settings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Artifact:
    """One checkpoint of the collection and the figures the paper reported for it (possibly none)."""

    base: BaseModel
    method: MethodSpec
    sparsity: int  # target, whole percent
    repo_id: str
    reported: dict[str, Any] = field(default_factory=dict)

    @property
    def repo_name(self) -> str:
        return self.repo_id.split("/")[-1]


@dataclass(frozen=True)
class Manifest:
    path: Path
    collection: str
    namespace: str
    suffix: str | None
    card: CardSettings
    base_models: tuple[BaseModel, ...]
    methods: tuple[MethodSpec, ...]
    sparsities: tuple[int, ...]
    reported: dict[str, dict[str, Any]]

    @property
    def out_dir(self) -> Path:
        """Where the cards live: a folder named like the manifest, beside it."""
        return self.path.parent / self.path.stem

    def artifacts(self) -> list[Artifact]:
        """Every checkpoint: base model × method × sparsity, in manifest order."""
        found = []
        for base in self.base_models:
            for method in self.methods:
                for sparsity in self.sparsities:
                    name = f"{base.name.lower()}-{method.name}-s{sparsity:02d}" + (f"-{self.suffix}" if self.suffix
                                                                                   else "")
                    found.append(Artifact(base, method, sparsity, f"{self.namespace}/{name}",
                                          self.reported.get(name, {})))
        return found

    def card_path(self, artifact: Artifact) -> Path:
        return self.out_dir / artifact.repo_name / "README.md"


def load_manifest(path: Path) -> Manifest:
    """Read and validate a collection manifest; every problem is a `CardError` naming the manifest."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CardError(f"cannot read collection manifest {path}: {describe_read_error(exc)}") from None
    if not isinstance(data, dict):
        raise CardError(f"collection manifest {path} must be a YAML mapping")

    def bad(message: str) -> CardError:
        return CardError(f"collection manifest {path}: {message}")

    _no_unknown(data, _MANIFEST_KEYS, "top level", bad)
    for key in ("collection", "namespace", "base_models", "methods", "sparsities"):
        if not data.get(key):
            raise bad(f"'{key}' is missing or empty")
    if "card" in data and "card_config" in data:
        raise bad("give 'card' (inline) or 'card_config' (a path), not both")
    if "card_config" in data:
        card = load_card_settings(path.parent / data["card_config"])
    else:
        card = _card_settings(data.get("card") or {}, bad)

    bases = []
    for entry in data["base_models"]:
        if not isinstance(entry, dict) or not entry.get("id") or not entry.get("license"):
            raise bad(f"every base model needs 'id' and 'license', got {entry!r}")
        _no_unknown(entry, {f.name for f in dataclasses.fields(BaseModel)}, f"base model {entry['id']}", bad)
        if entry["license"] == "other" and not entry.get("license_name"):
            raise bad(f"base model {entry['id']}: license 'other' needs a license_name")
        language = entry.get("language", ["en"])
        bases.append(BaseModel(**{**entry, "language": tuple([language] if isinstance(language, str)
                                                              else language)}))

    methods = []
    for name, spec in (data["methods"] or {}).items():
        spec = spec or {}
        _no_unknown(spec, {"description", "scope", "settings"}, f"method {name}", bad)
        settings = tuple((str(k), " ".join(str(v).split())) for k, v in (spec.get("settings") or {}).items())
        methods.append(MethodSpec(name, _squash(spec.get("description")), _squash(spec.get("scope")), settings))

    sparsities = tuple(data["sparsities"])
    if not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s < 100 for s in sparsities):
        raise bad(f"sparsities must be whole percents between 1 and 99, got {list(sparsities)}")

    manifest = Manifest(path, str(data["collection"]), str(data["namespace"]), data.get("suffix"), card,
                        tuple(bases), tuple(methods), sparsities, {})
    names = set()
    for artifact in manifest.artifacts():
        try:
            validate_repo_id(artifact.repo_id, "repo id")
        except SettingsError as exc:
            raise bad(str(exc)) from None
        names.add(artifact.repo_name)
    reported = data.get("reported") or {}
    unknown = sorted(set(reported) - names)
    if unknown:
        raise bad(f"'reported' names checkpoints that are not in the collection: {', '.join(unknown)}")
    checked = {name: _check_figures(name, figures, bad) for name, figures in reported.items()}
    return dataclasses.replace(manifest, reported=checked)


def render_artifact_card(manifest: Manifest, artifact: Artifact, template_dir: Path | None = None,
                         env: jinja2.Environment | None = None) -> str:
    """The card of one checkpoint of the collection, as text (`env`: reuse one built by `_environment`)."""
    env = env or _environment(template_dir)
    try:
        return env.get_template(TEMPLATE).render(_context(manifest, artifact))
    except jinja2.UndefinedError as exc:
        raise CardError(f"card template references an undefined value: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise CardError(f"card template {exc.filename or exc.name}:{exc.lineno}: {exc.message}") from None


def render_collection(manifest_path: Path, check: bool = False, template_dir: Path | None = None) -> list[Path]:
    """Render every card of the collection beside its manifest.

    `check=False`: write the cards that changed; return every card path.
    `check=True`: write nothing; return the cards that are missing or differ from what would be rendered,
    and any checked-in card of a checkpoint the manifest no longer names (stale).
    """
    manifest = load_manifest(manifest_path)
    artifacts = manifest.artifacts()
    env = _environment(template_dir)
    rendered = {manifest.card_path(a): render_artifact_card(manifest, a, env=env) for a in artifacts}
    if check:
        differ = [p for p, text in rendered.items() if not p.is_file() or p.read_text() != text]
        stale = sorted(set(manifest.out_dir.glob("*/README.md")) - set(rendered))
        return differ + stale
    for card_path, text in rendered.items():
        if not card_path.is_file() or card_path.read_text() != text:
            card_path.parent.mkdir(parents=True, exist_ok=True)
            card_path.write_text(text)
    return list(rendered)


def _check_figures(name: str, figures: Any, bad) -> dict[str, Any]:
    """Reported figures: known fields, numbers as verbatim strings, and the ones that relate must agree."""
    if not isinstance(figures, dict):
        raise bad(f"reported figures of {name} must be a mapping")
    _no_unknown(figures, set(REPORTED_FIELDS), f"reported figures of {name}", bad)
    for key, value in figures.items():
        if key == "actual_sparsity_note":
            continue
        if key == "srs" and not isinstance(value, dict):
            raise bad(f"{name}: 'srs' must map BBQ category → value")
        values = value.values() if key == "srs" else [value]
        for v in values:
            if not isinstance(v, str) or not _NUMBER.fullmatch(v):
                raise bad(f"{name}: {key} must be a quoted number exactly as the paper printed it "
                          f"(e.g. \"13.10\"), got {v!r}")
    if {"zero_params", "prunable_params", "actual_sparsity"} <= set(figures):
        share = 100 * _num(figures["zero_params"]) / _num(figures["prunable_params"])
        if abs(share - _num(figures["actual_sparsity"])) > 0.006:
            raise bad(f"{name}: zero_params / prunable_params is {share:.3f} %, not the reported "
                      f"actual_sparsity {figures['actual_sparsity']} %")
    if {"perplexity", "perplexity_dense", "perplexity_change"} <= set(figures):
        change = 100 * (_num(figures["perplexity"]) / _num(figures["perplexity_dense"]) - 1)
        given = _num(figures["perplexity_change"])
        if abs(change - given) > 0.5 + 0.01 * abs(given):
            raise bad(f"{name}: perplexity {figures['perplexity']} vs dense {figures['perplexity_dense']} is "
                      f"{change:+.1f} %, not the reported perplexity_change {figures['perplexity_change']} %")
    if ("zero_params" in figures) != ("prunable_params" in figures):
        raise bad(f"{name}: zero_params and prunable_params go together")
    return figures


def _context(manifest: Manifest, artifact: Artifact) -> dict[str, Any]:
    figures, card = artifact.reported, manifest.card
    method = artifact.method
    registered = METHODS.get(method.name)
    description = (method.description or (registered.description if registered else None)
                   or FALLBACK_DESCRIPTIONS.get(method.name, ""))
    not_reported = [label for key, label in REPORTED_FIELDS.items() if label and key not in figures]
    latencies = [(a, a.reported["latency_s"]) for a in manifest.artifacts()
                 if a.base == artifact.base and "latency_s" in a.reported]
    return {
        "front_matter": _metadata(artifact, card).to_yaml(),
        "card": dataclasses.asdict(card),
        "collection": {"name": manifest.collection, "manifest": manifest.path.name,
                       "size": len(manifest.artifacts()), "bases": len(manifest.base_models),
                       "methods": len(manifest.methods), "sparsities": len(manifest.sparsities)},
        "a": artifact,
        "base": artifact.base,
        "method": method,
        "scope": method.scope or SCOPE_DESCRIPTION,
        "description": description,
        "figures": figures,
        "metric_rows": _metric_rows(figures),
        "not_reported": not_reported,
        "latency_note": _latency_note(artifact, latencies),
    }


def _latency_note(artifact: Artifact, latencies: list[tuple[Artifact, str]]) -> str:
    """The paper's latencies for checkpoints of the same base model, for the 'no latency saving' caveat."""
    if not latencies:
        return ""
    shown = ", ".join(f"{value} s ({a.method.name} s{a.sparsity:02d}{', this checkpoint' if a == artifact else ''})"
                      for a, value in latencies)
    return (f"For {artifact.base.id} the paper reports mean latencies per BBQ prompt (MLX on Apple Silicon) of "
            f"{shown}; the dense model's is not reported.")


def _metadata(artifact: Artifact, card: CardSettings) -> ModelCardData:
    base = artifact.base
    license_fields = {"license": base.license}
    if base.license_name:
        license_fields["license_name"] = base.license_name
    if base.license_link:
        license_fields["license_link"] = base.license_link
    tags = ["pruning", artifact.method.name, "bias-evaluation", "llm-compression"]
    if card.arxiv_id:
        tags.append(f"arxiv:{card.arxiv_id}")
    tags.append(RESEARCH_ONLY_TAG)
    return ModelCardData(base_model=base.id, library_name="transformers", pipeline_tag="text-generation",
                         language=list(base.language), tags=tags, **license_fields)


def _metric_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, value, reference) for each reported figure of the metrics table, in a fixed order."""
    rows = []
    dense_ppl = f"dense {figures['perplexity_dense']}" if "perplexity_dense" in figures else "dense not reported"
    if "perplexity" in figures:
        rows.append(("perplexity (Tulu-3 SFT mix, 256 × 512 tokens)", figures["perplexity"], dense_ppl))
    if "perplexity_change" in figures:
        rows.append(("perplexity change vs dense", f"{figures['perplexity_change']} %", dense_ppl))
    for category, value in (figures.get("srs") or {}).items():
        rows.append((f"SRS, {category} (BBQ ambiguous)", value, "random choice ≈ 0.333"))
    if "srs_overall" in figures:
        dense = figures.get("srs_overall_dense")
        rows.append(("SRS overall (mean of categories)", figures["srs_overall"],
                     f"dense {dense}" if dense else "dense not reported"))
    if "new_bias_emergence" in figures:
        rows.append(("new-bias emergence", f"{figures['new_bias_emergence']} %",
                     "share of items with SRS 0 for the dense model and > 0 after pruning"))
    if "latency_s" in figures:
        rows.append(("latency per BBQ prompt", f"{figures['latency_s']} s",
                     "MLX on Apple Silicon, ≤ 5 new tokens, no warm-up; dense not reported"))
    return rows


def _environment(template_dir: Path | None) -> jinja2.Environment:
    env = template_environment(template_dir)
    env.filters["cell"] = lambda text: " ".join(str(text).split()).replace("|", "\\|")
    return env


def _card_settings(data: dict, bad) -> CardSettings:
    if not isinstance(data, dict):
        raise bad("'card' must be a mapping of card settings")
    _no_unknown(data, {f.name for f in dataclasses.fields(CardSettings)}, "card", bad)
    return CardSettings(**{**data, "extra_caveats": tuple(data.get("extra_caveats") or ())})


def _no_unknown(data: dict, known: Iterable[str], where: str, bad) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise bad(f"{where} has unknown keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _squash(text: str | None) -> str | None:
    return " ".join(str(text).split()) if text else None


def _num(text: str) -> float:
    return float(text.replace(",", ""))
