#!/usr/bin/env bash
# Make the separate virtual environment of the JAX side of the side-by-side benchmark:
# .venv-kfac-jax in the repository root (git-ignored), with the pins of requirements.txt.
#   bash benchmarks/kfac_jax/setup.sh            # create (or update) it
#   VENV=/some/dir bash benchmarks/kfac_jax/setup.sh   # elsewhere (then pass --venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$root/.venv-kfac-jax}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
"$venv/bin/python" - <<'PY'
import jax, kfac_jax, optax
print("jax", jax.__version__, "kfac-jax", kfac_jax.__version__, "optax", optax.__version__,
      "devices", jax.devices())
PY
echo "ready: $venv"
