"""JSON lines read with one-line errors naming the file and the line (each caller passes its error class).

    >>> rows = read_jsonl(Path("bbq/Age.jsonl"), error=BbqDataError)
    >>> for number, row in json_lines(handle, where="calibration file c4.json.gz", error=CalibrationError): ...
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def json_lines(lines: Iterable[str], *, where: str, error: type[Exception]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line; `error` names `where` and the line on bad JSON."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where}, line {number} is not valid JSON ({exc.msg})") from None


def read_jsonl(path: Path, *, error: type[Exception]) -> list[Any]:
    """Every value of a JSON-lines file, in order."""
    with open(path, encoding="utf-8") as f:
        return [row for _, row in json_lines(f, where=str(path), error=error)]
