"""What a normal install gets: the wheel carries the templates, the docs and every module, and pyproject.toml
declares exactly the third-party distributions publisher/ imports.

`tests/wheel_check.sh` (run by .ci/run) goes further: it installs the wheel with its dependencies into a fresh
venv outside the checkout and runs the console script there.
"""

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from publisher.resources import measurement_doc, template_dir

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "results" / "tiny-chat-s50.json"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _setuptools_ok() -> bool:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= 77
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the checkout (no build/ or egg-info left in the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ("publisher", "templates", "docs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Without isolation when this venv's setuptools can build it (fast, offline); else pip fetches one.
    isolation = ["--no-build-isolation"] if _setuptools_ok() else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp / "dist"),
                    str(src)], check=True, cwd=tmp, timeout=300)
    (found,) = (tmp / "dist").glob("publish_pruned-*.whl")
    return found


def test_the_wheel_carries_templates_docs_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [f"publisher/templates/{p.relative_to(ROOT / 'templates').as_posix()}"
                for p in (ROOT / "templates").rglob("*.j2")]
    expected += [f"publisher/docs/{p.relative_to(ROOT / 'docs').as_posix()}" for p in (ROOT / "docs").rglob("*.md")]
    expected += [p.relative_to(ROOT).as_posix() for p in (ROOT / "publisher").rglob("*.py")]
    assert "publisher/templates/model_card.md.j2" in expected and "publisher/docs/measurement.md" in expected
    missing = sorted(set(expected) - names)
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages): {missing}"


def test_the_unpacked_wheel_renders_a_card_without_the_checkout(wheel, tmp_path):
    """The wheel's own files, not the checkout's: `publisher` is imported from the unpacked wheel."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy2(FIXTURE, run / "results.json")
    code = ("import sys, publisher, publisher.resources as r; from publisher.cli import main; "
            "print(publisher.__file__); print(r.template_dir()); print(r.measurement_doc().splitlines()[0]); "
            "main(sys.argv[1:])")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", code, "card", "render", str(run / "results.json")],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    package, templates, doc_title = result.stdout.splitlines()[:3]
    assert Path(package).is_relative_to(site) and Path(templates) == site / "publisher" / "templates"
    assert doc_title.startswith("#")  # a Markdown title, whatever its words
    card = (run / "README.md").read_text()
    assert card.startswith("---\n") and "Research use only" in card


def test_resources_come_from_the_checkout_in_a_source_tree():
    assert (template_dir() / "model_card.md.j2").is_file() and (template_dir() / "partials").is_dir()
    assert measurement_doc().startswith("# ")


def _third_party_imports() -> dict[str, str]:
    """Top-level module name → first file importing it, for every non-stdlib, non-relative import in publisher/."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "publisher").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "publisher":
                    found.setdefault(top, path.relative_to(ROOT).as_posix())
    return found


def _declared() -> tuple[set[str], set[str]]:
    """(runtime dependencies, runtime + every extra) as canonical distribution names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {_canonical(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}

    runtime = names(project["dependencies"])
    return runtime, runtime | names(r for extra in project["optional-dependencies"].values() for r in extra)


def _distributions(module: str) -> set[str]:
    """The installed distributions providing `module` (its own name when none is installed)."""
    return {_canonical(d) for d in importlib.metadata.packages_distributions().get(module, [module])}


def test_every_third_party_import_is_declared():
    _, declared = _declared()
    undeclared = {module: where for module, where in _third_party_imports().items()
                  if not _distributions(module) & declared}
    assert not undeclared, f"imported but not in pyproject.toml dependencies or extras: {undeclared}"


def test_every_runtime_dependency_is_imported():
    runtime, _ = _declared()
    provided = set().union(*(_distributions(module) for module in _third_party_imports()))
    unused = sorted(runtime - provided)
    assert not unused, f"declared in pyproject.toml dependencies but never imported by publisher/: {unused}"


def test_the_results_fixture_is_valid_json_with_measurements():
    data = json.loads(FIXTURE.read_text())
    assert {"perplexity", "srs"} <= set(data["metrics"])
