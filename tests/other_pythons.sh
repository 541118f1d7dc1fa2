#!/usr/bin/env bash
# The process-level tests under Python versions other than the main venv's (`make test-other-pythons`).
#
# For each version in NBPROC_OTHER_PYTHONS (default: 3.13; e.g. "3.13 3.12 3.10"):
#   1. find an interpreter of exactly that version: pyenv's versions directory, `pyenv prefix`,
#      then `pythonX.Y` on PATH (a pyenv shim on PATH may exist and still fail, so each
#      candidate is run and its version checked);
#   2. create .venv-X.Y and install nbproc with its `test` and `dill` extras, which is
#      skipped while the venv is newer than pyproject.toml and was made by the same interpreter
#      (the same caching as the main .venv in the Makefile);
#   3. run pytest on tests/ minus the Jupyter-kernel tests (marker `kernel`) and the docs
#      build: those check the notebook layer and the docs, which the main venv covers, while
#      what depends on the Python version is the process machinery.
# A version whose interpreter is missing prints a visible "SKIPPED: ..." line and does not fail
# the run. Exit status: non-zero if any version's tests failed or its venv could not be built.
set -uo pipefail
cd "$(dirname "$0")/.."

VERSIONS=${NBPROC_OTHER_PYTHONS:-3.13}
PYENV_DIR=${PYENV_ROOT:-$HOME/.pyenv}

is_version() {  # is_version PYTHON X.Y: does PYTHON run, and is it exactly version X.Y?
    "$1" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$2' else 1)" >/dev/null 2>&1
}

find_python() {  # find_python X.Y: print the path of a working Python X.Y, or fail
    local version=$1 candidate prefix
    # Newest patch release first.
    for candidate in $(ls -d "$PYENV_DIR"/versions/"$version".*/bin/python 2>/dev/null | sort -rV); do
        if is_version "$candidate" "$version"; then echo "$candidate"; return 0; fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        prefix=$(pyenv prefix "$version" 2>/dev/null) || prefix=""
        if [ -n "$prefix" ] && is_version "$prefix/bin/python" "$version"; then
            echo "$prefix/bin/python"; return 0
        fi
    fi
    candidate=$(command -v "python$version" 2>/dev/null) || candidate=""
    if [ -n "$candidate" ] && is_version "$candidate" "$version"; then echo "$candidate"; return 0; fi
    return 1
}

ensure_venv() {  # ensure_venv PYTHON VENV: create/refresh VENV unless it is up to date
    local python=$1 venv=$2 stamp="$2/.installed"
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$(cat "$stamp")" = "$python" ]; then
        echo "using cached $venv (up to date with pyproject.toml)"
        return 0
    fi
    echo "building $venv with $python ..."
    rm -rf "$venv"
    "$python" -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -U pip || return 1
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,dill]' || return 1
    echo "$python" >"$stamp"
}

failed=()
for version in $VERSIONS; do
    echo "=== Python $version: process-level tests (pytest tests -m 'not kernel', docs build excluded) ==="
    if ! python=$(find_python "$version"); then
        echo "SKIPPED: python$version not found on this machine"
        continue
    fi
    venv=".venv-$version"
    if ! ensure_venv "$python" "$venv"; then
        echo "FAILED: could not build $venv with $python"
        failed+=("$version (venv)")
        continue
    fi
    started=$SECONDS
    if "$venv/bin/python" -m pytest tests -m "not kernel" --ignore=tests/test_docs.py -q -p no:cacheprovider; then
        echo "Python $version: passed in $((SECONDS - started)) s"
    else
        echo "Python $version: FAILED after $((SECONDS - started)) s"
        failed+=("$version")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "other Pythons failed: ${failed[*]}"
    exit 1
fi
