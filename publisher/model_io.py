"""Find the base model (Hub id, local folder or GGUF file), pin it, load it, save the pruned copy.

    >>> src = resolve_source(settings)          # pins a Hub commit or hashes the local files
    >>> model, tokenizer = load_model(src, fetch_weights(src, settings), settings, offload_dir=Path("offload"))
    >>> save_checkpoint(model, tokenizer, Path("staging"), shard_size="5GB")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.repocard import metadata_load

from .base_files import CHAT_TEMPLATE_DIR, PICKLE_SUFFIXES, hub_ignore_patterns, is_license_file, list_files
from .config_compat import write_compatible_config
from .errors import ArchitectureError, ModelSourceError, SettingsError
from .hashing import sha256_file, sha256_file_unchanged
from .placement import check_devices_present, check_map_fits, from_pretrained_kwargs
from .results import FileDigest
from .settings import RunSettings, validate_repo_id

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# The base card's gating fields: the pruned repo's card carries them (the terms it asks users to accept).
GATING_KEYS = ("extra_gated_heading", "extra_gated_description", "extra_gated_prompt", "extra_gated_fields",
               "extra_gated_button_content")


@dataclass(frozen=True)
class ResolvedSource:
    """A base model pinned to exact bytes, with the card facts its publisher declared."""

    kind: str  # "hub" | "folder" | "gguf"
    reference: str
    local_path: Path | None  # folder holding config/weights (GGUF: the file's folder; Hub: None until fetched)
    gguf_file: str | None
    revision: str | None
    content_sha256: str | None
    base_model_id: str | None
    license: str | None
    license_name: str | None
    license_link: str | None
    language: tuple[str, ...]
    gated: str | None = None  # the base Hub repo's gate: "auto" | "manual"; None when not gated or not on the Hub
    gating: dict[str, Any] = field(default_factory=dict)  # GATING_KEYS found in the base card's front matter
    gguf_quantization: str | None = None  # a GGUF base's file type, e.g. "Q4_1": what was dequantized

    @property
    def identity(self) -> str:
        return f"{self.kind}:{self.reference}@{self.revision or self.content_sha256}"


def digest_files(folder: Path, names: list[str]) -> dict[str, FileDigest]:
    return {n: FileDigest(sha256=sha256_file(folder / n), size=(folder / n).stat().st_size) for n in names}


def resolve_source(settings: RunSettings, *, endpoint: str | None = None, token: str | None = None) -> ResolvedSource:
    """Pin `settings.model` to exact bytes: a Hub commit, or a content hash of the local files."""
    path = Path(settings.model).expanduser()
    if settings.revision and (path.suffix == ".gguf" or path.exists()):
        raise ModelSourceError(f"--revision {settings.revision!r} names a commit of a Hub model, but {path} is local "
                               "(its content hash pins it); drop --revision")
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSourceError(f"GGUF file not found: {path}")
        return _resolve_gguf(path, settings)
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"--model {path} is a file but not a .gguf; pass a folder, a GGUF or a Hub id")
        return _resolve_folder(path, settings)
    if settings.model.startswith((".", "/", "~")) or settings.model.count("/") != 1:
        raise ModelSourceError(f"--model {settings.model!r} is neither an existing path nor a Hub id (org/name)")
    return _resolve_hub(settings, endpoint=endpoint, token=token)


def _check_weight_files(names: list[str], where: str, trust_pickled: bool) -> None:
    if any(n.endswith(".safetensors") for n in names):
        return
    pickled = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickled and not trust_pickled:
        raise ModelSourceError(
            f"{where} holds only pickled weights ({pickled[0]}); loading pickles can run arbitrary code — "
            "pass --trust-pickled-weights if you trust the source"
        )
    if not pickled:
        raise ModelSourceError(f"{where} holds no model weights (no .safetensors files)")


def _resolve_folder(path: Path, settings: RunSettings) -> ResolvedSource:
    names = sorted(p.name for p in path.iterdir() if p.is_file())
    if "config.json" not in names:
        raise ModelSourceError(f"{path} has no config.json; is it a transformers model folder?")
    _check_weight_files(names, str(path), settings.trust_pickled_weights)
    # weights, configs, everything the tokenizer, chat template or model code is read from, and the license
    # terms the checkpoint is published with
    hashed = [n for n in names if n.endswith((".safetensors", ".json", ".model", ".txt", ".jinja", ".tiktoken", ".py",
                                              *PICKLE_SUFFIXES)) or is_license_file(n)]
    if (path / CHAT_TEMPLATE_DIR).is_dir():
        hashed += [f"{CHAT_TEMPLATE_DIR}/{n}" for n in list_files(path / CHAT_TEMPLATE_DIR)]
    content = hashlib.sha256(
        json.dumps({n: sha256_file_unchanged(path / n) for n in hashed}, sort_keys=True).encode()
    ).hexdigest()
    meta = _card_metadata(path / "README.md")
    return ResolvedSource(
        kind="folder", reference=str(path.resolve()), local_path=path.resolve(), gguf_file=None,
        revision=None, content_sha256=content, base_model_id=settings.base_model_id, **meta,
    )


def gguf_file_type(value: object) -> str | None:
    """`general.file_type` of a GGUF as its quantization's name: 3 → "Q4_1", 1 → "F16"; None when unknown."""
    import gguf

    try:
        return gguf.LlamaFileType(int(value)).name.removeprefix("MOSTLY_")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _resolve_gguf(path: Path, settings: RunSettings) -> ResolvedSource:
    import gguf

    try:
        fields = gguf.GGUFReader(str(path)).fields
    except Exception as exc:  # gguf raises bare ValueErrors on corrupt headers
        raise ModelSourceError(f"{path} is not a readable GGUF file ({exc})") from None

    def fields_value(key: str) -> object:
        return fields[key].contents() if key in fields else None

    languages = fields_value("general.languages") or []
    return ResolvedSource(
        gguf_quantization=gguf_file_type(fields_value("general.file_type")),
        kind="gguf", reference=str(path.resolve()), local_path=path.resolve().parent, gguf_file=path.name,
        revision=None, content_sha256=sha256_file_unchanged(path), base_model_id=settings.base_model_id,
        license=fields_value("general.license"), license_name=None, license_link=None,
        language=tuple(languages if isinstance(languages, list) else [languages]),
    )


def _resolve_hub(settings: RunSettings, *, endpoint: str | None, token: str | None) -> ResolvedSource:
    """Pin a Hub model to a commit and read its card metadata; downloads nothing."""
    repo_id = validate_repo_id(settings.model, what="--model")
    with _hub_errors(repo_id, settings.revision):
        info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=settings.revision)
    _check_weight_files([s.rfilename for s in info.siblings or []], repo_id, settings.trust_pickled_weights)
    card = info.card_data.to_dict() if info.card_data else None
    if card is None and any(s.rfilename == "README.md" for s in info.siblings or []):
        with _hub_errors(repo_id, settings.revision):
            readme = hf_hub_download(repo_id, "README.md", revision=info.sha, endpoint=endpoint, token=token)
        card = metadata_load(readme)
    meta = _metadata_fields(card or {})
    return ResolvedSource(
        kind="hub", reference=repo_id, local_path=None, gguf_file=None, revision=info.sha,
        content_sha256=None, base_model_id=settings.base_model_id or repo_id,
        gated=info.gated if info.gated in ("auto", "manual") else None, **meta,
    )


def fetch_weights(source: ResolvedSource, settings: RunSettings, *, endpoint: str | None = None,
                  token: str | None = None, cache_dir: Path | None = None) -> Path:
    """The local folder holding the source's files; downloads a Hub snapshot at the pinned commit."""
    if source.local_path is not None:
        return source.local_path
    ignore = hub_ignore_patterns(trust_pickled=settings.trust_pickled_weights)
    with _hub_errors(source.reference, source.revision):
        folder = snapshot_download(source.reference, revision=source.revision, ignore_patterns=ignore,
                                   endpoint=endpoint, token=token, cache_dir=cache_dir)
    return Path(folder)


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Turn the client's typed errors into one-line ModelSourceErrors."""
    try:
        yield
    except RevisionNotFoundError:
        raise ModelSourceError(f"revision {revision!r} not found in {repo_id}") from None
    except GatedRepoError:
        raise ModelSourceError(f"{repo_id} is gated: accept its terms on the Hub and use a token") from None
    except RepositoryNotFoundError:
        raise ModelSourceError(f"model {repo_id!r} not found on the Hub (or it is private)") from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelSourceError(f"cannot fetch {repo_id} from the Hub ({type(exc).__name__})") from None
    except Exception as exc:
        from .hub.retry import describe, is_transient

        if is_transient(exc):  # httpx2's connection errors are not OSErrors
            raise ModelSourceError(f"cannot reach the Hub to fetch {repo_id} ({describe(exc)})") from None
        raise


def _card_metadata(readme: Path) -> dict:
    """License and language from a local model card's YAML front matter."""
    return _metadata_fields((metadata_load(readme) if readme.is_file() else None) or {})


def _metadata_fields(meta: dict) -> dict:
    """The card facts we inherit (absent values stay None/empty), from front matter huggingface_hub parsed."""
    language = meta.get("language") or []
    return {
        "license": meta.get("license"),
        "license_name": meta.get("license_name"),
        "license_link": meta.get("license_link"),
        "language": tuple(language if isinstance(language, list) else [language]),
        "gating": {key: meta[key] for key in GATING_KEYS if meta.get(key) is not None},
    }


def torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def check_device(device: str) -> str:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SettingsError(f"--device {device!r} is not a torch device (try cpu, cuda, cuda:1, mps)") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise SettingsError(f"--device {device!r}: this tool runs on cpu, cuda or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError("--device cuda requested but no CUDA GPU is available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError("--device mps requested but MPS is not available")
    return device


def load_model(source: ResolvedSource, folder: Path, settings: RunSettings, *,
               offload_dir: Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer from `folder` with transformers; returns (model, tokenizer) in eval mode.

    With `settings.device_map`, accelerate places the layers (GPUs, then CPU, then `offload_dir` on disk).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"trust_remote_code": settings.trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    check_devices_present(settings)
    placement = from_pretrained_kwargs(settings, offload_dir)
    if isinstance(placement.get("device_map"), dict):
        _check_map_against_config(folder, placement["device_map"], settings)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        if source.gguf_file:  # dequantized to float32 by transformers; cast afterwards
            model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", **kwargs)
        else:  # use_safetensors: True refuses pickles; None prefers safetensors and allows trusted .bin
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch_dtype(settings.dtype),
                use_safetensors=None if settings.trust_pickled_weights else True, **placement, **kwargs,
            )
    except (OSError, ValueError, SafetensorError, KeyError, TypeError, RuntimeError) as exc:
        # SafetensorError: e.g. a Git LFS pointer; KeyError/TypeError: a malformed index or config;
        # RuntimeError: weights whose shapes do not fit the config
        raise ModelSourceError(f"cannot load {source.reference}: {_first_line(exc)}") from None
    if source.gguf_file:
        _detach_gguf_quantizer(model, source)
        if settings.dtype != "auto":
            model.to(torch_dtype(settings.dtype))
    if not placement:
        model.to(check_device(settings.device))
    model.eval()
    return model, tokenizer


def load_checkpoint(folder: Path, settings: RunSettings, *,
                    offload_dir: Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A checkpoint this tool saved (the run folder, a dense copy), placed like the base model; eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    remote = {"trust_remote_code": settings.trust_remote_code}  # never None: None makes transformers ask on stdin
    placement = from_pretrained_kwargs(settings, offload_dir)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", **placement, **remote)
    if not placement:
        model.to(check_device(settings.device))
    return model.eval(), AutoTokenizer.from_pretrained(folder, **remote)


def _check_map_against_config(folder: Path, mapping: dict, settings: RunSettings) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=settings.trust_remote_code)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=settings.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot read the config in {folder}: {_first_line(exc)}") from None
    check_map_fits(skeleton, mapping)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _detach_gguf_quantizer(model, source: ResolvedSource) -> None:
    """A GGUF loaded for pruning is dequantized into plain Linear weights; drop the marker that says otherwise.

    transformers keeps its GGUF quantizer attached even when it fell back to dequantizing, and then refuses
    to save. We check that every weight really is a plain float tensor before detaching it.
    """
    import torch

    packed = [n for n, p in model.named_parameters() if not torch.is_floating_point(p)]
    if packed:
        raise ModelSourceError(f"{source.reference}: GGUF weights stayed packed ({packed[0]}); cannot prune them")
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)


def saved_weight_names(model, names: list[str]) -> dict[str, str]:
    """The key `save_pretrained` writes each of these weights under, by transformers' own reverse of the
    renaming it applies at load: the module name for most models, the original checkpoint name for some
    (vision-language Gemma-3: `language_model.model.layers…`; EXAONE 3: `transformer.h.N…`).

    Raises ArchitectureError for a weight saved converted (merged or split), not only renamed.
    """
    import torch

    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # another transformers: no renaming on save
        return {name: name for name in names}
    from .prune.moe_layout import LayoutError, expert_saved_names

    try:  # an expert's matrix is a slice of a 3-D parameter, saved on its own (empty for a dense model)
        experts = {name: key for name, key in expert_saved_names(model).items() if name in set(names)}
    except LayoutError as error:
        raise ArchitectureError(f"{error}; this model is not supported") from None
    placeholders = {name: torch.empty(0, device="meta") for name in names if name not in experts}
    owner = {id(tensor): name for name, tensor in placeholders.items()}
    reverted = revert_weight_conversion(model, dict(placeholders)) if placeholders else {}
    found = {owner[id(tensor)]: key for key, tensor in reverted.items() if id(tensor) in owner} | experts
    missing = next((name for name in names if name not in found), None)
    if missing is not None:
        raise ArchitectureError(f"cannot tell under which name transformers saves {missing} (it converts the "
                                "weight, not only renames it); this model is not supported")
    return found


def save_checkpoint(model, tokenizer, folder: Path, *, shard_size: str) -> list[str]:
    """Write safetensors shards (+ index when sharded), config, generation config and tokenizer files
    (chat templates included); config.json also spells RoPE the way older readers expect (`config_compat`).

    safetensors writes tensors from their own memory (no serialised copy), so peak memory stays at the
    model's size. Returns the paths of the files written relative to `folder`, sorted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size=shard_size)
    write_compatible_config(folder)
    tokenizer.save_pretrained(folder)
    return list_files(folder)
