#!/usr/bin/env bash
# Writes .whl/ (git-ignored): the wheels a lent GPU machine (Python 3.12, x86-64, no network) needs to run
# benchmarks/gpu_check.sh. Its image has torch, numpy, SciPy, scikit-learn, pandas and matplotlib; it lacks
# the notebook stack (papermill, ipykernel, myst-nb ...) and pydicom. Run here, with network.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the rehearsal imports (every process of `bench_paper_scale.py --scale tiny`, listed on 2026-12-06) that the
# GPU image lacks, a few small modules IPython reaches on other paths, and the Hugging Face libraries, which
# the image holds at other versions: each travels at the version requirements-lock.txt pins. The book's
# stack (Sphinx, themes) stays behind: the check builds no book.
NEEDED="accelerate huggingface-hub transformers tokenizers safetensors hf-xet comm debugpy docutils entrypoints
fastjsonschema httpcore2 httpx2 ipykernel ipython ipython-pygments-lexers jsonschema jsonschema-specifications
jupyter-client jupyter-core jupytext linkify-it-py matplotlib-inline mdit-py-plugins myst-nb nbclient nbformat
nest-asyncio2 papermill platformdirs pydicom pyzmq referencing rpds-py tenacity tornado traitlets truststore wcwidth
prompt-toolkit pexpect ptyprocess stack-data executing asttokens pure-eval parso"
wanted=$(python3 - "$NEEDED" <<'PY'
import re, sys
norm = lambda n: n.lower().replace("_", "-")
needed = set(map(norm, sys.argv[1].split()))
pinned = {}
for line in open("requirements-lock.txt"):
    line = line.split("#")[0].strip()
    if line:
        pinned[norm(re.split(r"[=<>;\[ ]", line)[0])] = line
missing = needed - set(pinned)
if missing:
    sys.exit(f"not in requirements-lock.txt: {' '.join(sorted(missing))}")
print("\n".join(pinned[n] for n in sorted(needed)))
PY
)
rm -rf .whl
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
platforms=""
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_31_x86_64 \
         manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64 manylinux_2_5_x86_64 any; do
  platforms="$platforms --platform $p"
done
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms -d .whl $wanted
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
