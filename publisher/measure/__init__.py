"""Measurements of what pruning did: perplexity (protocol §4) and the Stereotype Reliance Score on BBQ (§3).

    >>> from publisher.measure import build_ppl_rows, evaluate_perplexity, ppl_source
    >>> rows = build_ppl_rows(tokenizer, ppl_source("tulu.jsonl"), n_rows=256, seq_len=512)
    >>> evaluate_perplexity(model, rows).ppl
    >>> from publisher.measure import bbq_source, load_bbq, evaluate_srs, compare_srs, bias_blind_check
    >>> bbq = load_bbq(bbq_source("../shared/data/bbq"))
    >>> run = evaluate_srs(model, tokenizer, bbq.items)

Modules: `perplexity` (rows + evaluation), `bbq` (sources, target derivation, prompts, `bbq prepare`),
`sampler` (batch-invariant seeded sampling), `srs` (parser, rates, comparisons), `stats` (Wilson intervals,
changes, disparity), `chat` (chat templates, system-turn merging), `errors`.
"""

from .bbq import (
    STUDY_CATEGORIES,
    BbqItem,
    BbqSet,
    BbqSource,
    bbq_source,
    derive_target,
    load_bbq,
    prompt_messages,
    write_prepared,
)
from .errors import BbqDataError, ChatTemplateError, MeasureError, PerplexityDataError
from .perplexity import PerplexityResult, PplRows, PplSource, build_ppl_rows, evaluate_perplexity, ppl_source
from .sampler import STUDY_SEEDS, SamplingConfig
from .srs import SrsComparison, SrsRun, bias_blind_check, compare_srs, evaluate_srs, parse_answer, write_replies_jsonl
from .stats import Proportion, wilson_interval

__all__ = [
    "STUDY_CATEGORIES", "STUDY_SEEDS", "BbqDataError", "BbqItem", "BbqSet", "BbqSource", "ChatTemplateError",
    "MeasureError", "PerplexityDataError", "PerplexityResult", "PplRows", "PplSource", "Proportion",
    "SamplingConfig", "SrsComparison", "SrsRun", "bbq_source", "bias_blind_check", "build_ppl_rows",
    "compare_srs", "derive_target", "evaluate_perplexity", "evaluate_srs", "load_bbq", "parse_answer",
    "ppl_source", "prompt_messages", "wilson_interval", "write_prepared", "write_replies_jsonl",
]
