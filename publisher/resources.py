"""Files the tool reads at run time that are not Python: the card templates and the measurement definitions.

    >>> template_dir()        # a folder Jinja reads: <site-packages>/publisher/templates or <checkout>/templates
    >>> measurement_doc().splitlines()[0]
    '# Measurement definitions ...'

Developers edit `templates/` and `docs/` at the top of the checkout. pyproject.toml maps them into the wheel as
`publisher/templates` and `publisher/docs` (setuptools `package-dir` + `package-data`), so an installed tool
finds them inside its own package. An editable install or a bare checkout (the GPU machine runs the tests from
one) has no such folder inside `publisher/`: there the checkout's folders beside the package are used.
setuptools' editable finder cannot serve these folders as `publisher.templates` (it only maps packages with
an `__init__.py` or top-level names), hence the lookup by folder rather than by import name.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import PublishPrunedError

MEASUREMENT_DOC = "measurement.md"


def _resource_dir(name: str) -> Path:
    """`publisher/<name>` inside an installed package, else `<checkout>/<name>` beside the package."""
    inside = Path(str(files("publisher") / name))  # a real folder: the wheel installs unzipped
    if inside.is_dir():
        return inside
    checkout = Path(__file__).resolve().parents[1] / name
    if checkout.is_dir():
        return checkout
    raise PublishPrunedError(f"the bundled {name}/ folder is missing (looked in {inside} and {checkout}): "
                             "the install is incomplete; reinstall publish-pruned")


def template_dir() -> Path:
    """The folder holding the bundled card templates (`model_card.md.j2`, `partials/`...)."""
    return _resource_dir("templates")


def docs_dir() -> Path:
    """The folder holding the bundled documents (`measurement.md`)."""
    return _resource_dir("docs")


def measurement_doc() -> str:
    """The measurement definitions (docs/measurement.md) as text, from the installed package or the checkout."""
    return (docs_dir() / MEASUREMENT_DOC).read_text(encoding="utf-8")
