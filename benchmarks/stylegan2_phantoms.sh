#!/usr/bin/env bash
# The issue-8 acceptance run, end to end: two phantom classes at 64x64 (retina RGB, cells
# grayscale), a conditional StyleGAN2 trained on them, its losses and class check
# (stylegan2_training.py), then the per-class evaluation (evaluate_cstylegan2.sh).
#
#   benchmarks/stylegan2_phantoms.sh [WORK]        (default WORK: runs/stylegan2-phantoms)
#
# Environment: STEPS (1000), COUNT phantoms per class (200), SYNTHMED and PYTHON (the synthmed
# executable and its python, e.g. .venv/bin/synthmed and .venv/bin/python), and whatever
# evaluate_cstylegan2.sh reads (COUNT_SYNTHETIC is passed to it as COUNT). About 10 min of
# training and 5 of evaluation on 2 idle CPU cores at the defaults.
set -euo pipefail

work=${1:-runs/stylegan2-phantoms}
synthmed=${SYNTHMED:-synthmed}
python=${PYTHON:-python}
steps=${STEPS:-1000}
count=${COUNT:-200}
here=$(dirname "$0")

"$synthmed" data phantom --kind retina --out "$work/retina" --count "$count" --size 64 --seed 1
"$synthmed" data phantom --kind cells --grayscale --out "$work/cells" --count "$count" --size 64 --seed 2
"$synthmed" train stylegan2 --data "$work/retina" --data "$work/cells" --out "$work/run" \
    --steps "$steps" --z-dim 64 --w-dim 64 --mapping-layers 2 --channel-base 2048 \
    --max-channels 128 --ada-kimg 20 --sample-every 100 --checkpoint-every 100 --quiet
"$python" "$here/stylegan2_training.py" "$work/run" \
    --json "${TRAINING_RESULTS:-benchmarks/results/stylegan2_training.json}"
COUNT=${COUNT_SYNTHETIC:-500} SYNTHMED="$synthmed" PYTHON="$python" \
    "$here/evaluate_cstylegan2.sh" "$work/run" "$work/evaluate"
