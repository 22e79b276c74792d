#!/usr/bin/env bash
# The tool as a user installs it: build the wheel from the checkout, install it with its dependencies into a
# fresh venv outside the checkout (torch==2.13.0 first, the CPU build, as the Makefile pins it), then run the
# console script there: `card render` + `card lint` on a results fixture, and `--help` of every command.
#   bash tests/wheel_check.sh          # CI runs it after `make test` (.ci/run); needs .venv (make install)
# Ends with 'wheel-check: N passed, M failed'; exits 1 when any check failed. pip's cache keeps re-runs fast.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
TORCH=$(sed -n 's/^TORCH := *//p' Makefile)
LOWEST="huggingface_hub==1.33.0 transformers==5.17.0"   # keep in step with pyproject.toml's lower bounds
WORK=$(mktemp -d "${TMPDIR:-/tmp}/publish-pruned-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
pip_quiet() {  # pip -q, less its notes about configured local indexes that lack a package
  "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

# Build from a copy of what the wheel is made of, so no build/ or egg-info of an earlier build leaks into it.
mkdir "$WORK/src"
cp -r pyproject.toml README.md publisher templates docs "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
pip_quiet "$ROOT/.venv/bin/pip" wheel -q --no-deps -w "$WORK/dist" "$WORK/src"   # isolated: build-system.requires as declared
WHEEL=$(ls "$WORK"/dist/publish_pruned-*.whl)
echo "wheel-check: built $(basename "$WHEEL")"

"$PYTHON" -m venv "$WORK/venv"
VENV="$WORK/venv/bin"
pip_quiet "$VENV/pip" install -q "$TORCH"
pip_quiet "$VENV/pip" install -q "$WHEEL"   # the declared dependencies, resolved as pip resolves them for a user
echo "wheel-check: installed into $WORK/venv ($("$VENV/python" -c 'import huggingface_hub as h, transformers as t
print("huggingface_hub", h.__version__, "transformers", t.__version__)'))"

cd "$WORK"   # outside the checkout: only the installed package can be imported
export HF_HUB_OFFLINE=1
passed=0 failed=0
check() {  # check NAME COMMAND...: run it, keep its output, count it
  local name=$1; shift
  if "$@" >"$WORK/out.log" 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $name"; tail -n 20 "$WORK/out.log"
  fi
}

check "package imported from the venv, resources inside it" "$VENV/python" -c '
import publisher, publisher.resources as r, sys
venv = sys.prefix
assert publisher.__file__.startswith(venv), publisher.__file__
assert str(r.template_dir()).startswith(venv) and (r.template_dir() / "model_card.md.j2").is_file()
assert r.measurement_doc().startswith("#")'

mkdir run
cp "$ROOT/tests/fixtures/results/tiny-chat-s50.json" run/results.json
check "card render" "$VENV/publish-pruned" card render run/results.json
check "card lint" "$VENV/publish-pruned" card lint run/README.md

# Every command and subcommand, as click knows them (a group's commands are listed by the group itself).
COMMANDS=$("$VENV/python" -c '
import click
from publisher.cli import main
def walk(command, path):
    print(" ".join(path))
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            walk(sub, [*path, name])
walk(main, [])')
while IFS= read -r command; do
  # shellcheck disable=SC2086  # the words of a command path
  check "publish-pruned $command --help" "$VENV/publish-pruned" $command --help
done <<<"$COMMANDS"

echo "wheel-check: commands checked: $(echo "$COMMANDS" | sed 's/^$/(main)/' | paste -sd, -)"

# The lowest versions pyproject.toml allows and we test (a GPU machine runs these): every module imports, the
# card renders, and the Hub client paths (retries, timeouts, card sync) pass against the emulator.
pip_quiet "$VENV/pip" install -q $LOWEST "pytest>=8"
echo "wheel-check: now $LOWEST"
check "every module imports ($LOWEST)" "$VENV/python" -c '
import importlib, pkgutil, publisher
for m in pkgutil.walk_packages(publisher.__path__, "publisher."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)'
rm -rf run/README.md run/plots
check "card render ($LOWEST)" "$VENV/publish-pruned" card render run/results.json
check "card lint ($LOWEST)" "$VENV/publish-pruned" card lint run/README.md
cd "$ROOT"   # the checkout's tests, on the venv's libraries
check "Hub client tests ($LOWEST)" env HF_HUB_OFFLINE=0 "$VENV/python" -m pytest -q -p no:cacheprovider \
  tests/test_front_matter.py tests/test_hub_card_sync.py tests/test_hub_faults.py
echo "wheel-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
