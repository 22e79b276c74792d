"""Errors of the measurement stage, each one a `PublishPrunedError` the CLI turns into one line.

    >>> raise PerplexityDataError("only 1,234 tokens in tulu.jsonl; 256 x 512 = 131,072 are needed")
"""

from __future__ import annotations

from ..errors import PublishPrunedError


class MeasureError(PublishPrunedError):
    """A measurement cannot run with the data, model or options given."""


class PerplexityDataError(MeasureError):
    """The perplexity data cannot be read, rendered, or holds too few tokens for N x L."""


class BbqDataError(MeasureError):
    """The BBQ source cannot be read, a requested category is absent, or an item is unusable."""


class ChatTemplateError(MeasureError):
    """The tokenizer has no chat template, or its template cannot render the conversation."""
