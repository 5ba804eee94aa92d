#!/usr/bin/env bash
# The GPU check of the paper-scale rehearsal, for a lent GPU machine without network. From the repository
# root, with .whl/ carried (benchmarks/gpu_wheels.sh writes it here):
#
#     device run: bash benchmarks/gpu_check.sh        (carry: .whl; timeout about 540 s)
#
# Installs the wheels aside (the image's torch stays), runs the tests that need CUDA (fits on the GPU agree
# with the CPU's), then `bench_paper_scale.py --scale full`; the JSON, the logs and nvidia-smi's line go to
# $OUT (the device tool brings that folder back) or to _work/gpu-check. SCALE=small or tiny rehearses the
# script itself; NO_WHEELS=1 skips the install where the packages are already there.
set -uo pipefail
if [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed: run benchmarks/gpu_wheels.sh and carry .whl"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SEMALIGN_WORKDIR=${SEMALIGN_WORKDIR:-/tmp/semalign-work}
OUT=${OUT:-_work/gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_align.py tests/test_stitching.py tests/test_encoders.py \
  -k "cuda or device or gpu" 2>&1 | tail -n 15 | tee "$OUT/tests.log"
# the rehearsal gets what is left of a 9-minute command
timeout "${BENCH_TIMEOUT:-420}" "$PYTHON" benchmarks/bench_paper_scale.py --scale "${SCALE:-full}" \
  --workdir /tmp/semalign-paper-scale 2>&1 | tee "$OUT/bench.log"
status=${PIPESTATUS[0]}
cp "$SEMALIGN_WORKDIR"/benchmarks/paper-scale-*.json "$OUT/" 2>/dev/null
exit "$status"
