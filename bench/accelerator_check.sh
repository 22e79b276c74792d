#!/usr/bin/env bash
# On a machine with a GPU and no network (this project's lent device machine): the accelerator tests, then
# bench/bench_accelerator.py. Python packages the machine's image lacks, or has at other versions than our
# venv, travel as wheels in .whl/ (git-ignored) and are installed to /tmp/site first. Logs go to $OUT.
#   bash bench/accelerator_check.sh [pytest -k expression]     # BENCH_ARGS="--sections calibrated" picks bench parts
# The wheels, fetched where pip can reach PyPI (versions of our venv; the H200 image runs Python 3.12):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl transformers==5.24.0 huggingface_hub==2.4.0 httpx2==2.16.2 \
#     httpcore2==2.16.2 truststore==0.10.5 tokenizers==0.23.3 gguf==0.19.0 click==8.5.1
set -u -o pipefail
OUT=${OUT:-/tmp/accelerator-check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export HF_HUB_DISABLE_XET=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, huggingface_hub, accelerate, click; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'hub', huggingface_hub.__version__, 'accelerate', accelerate.__version__, \
'click', click.__version__, 'cuda', torch.cuda.is_available())"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_accelerators.py -k "not whole_command${1:+ and ($1)}" \
  2>&1 | tee "$OUT/tests.log"
# The whole command publishes to the bundled local Hub (127.0.0.1), which offline mode would refuse.
HF_HUB_OFFLINE=0 timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_accelerators.py -k "whole_command${1:+ and ($1)}" \
  2>&1 | tee -a "$OUT/tests.log"
timeout 300 python3 bench/bench_accelerator.py ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
