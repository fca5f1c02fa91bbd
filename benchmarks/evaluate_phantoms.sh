#!/usr/bin/env bash
# Reproduce the README's evaluation: dual GAN vs single-GAN baseline vs real retina phantoms.
#
#   benchmarks/evaluate_phantoms.sh [SIZE] [WORK]      (defaults: 128, runs/evaluate-SIZE)
#
# Real training data are the demo models' own (500 phantoms, seed 2026); the held-out real set
# is 100 phantoms of another seed. At 128x128 the bundled demo models are the dual GAN; at any
# other size `synthmed train-demo --size SIZE` trains both stages with the demo's recipe.
# The single-GAN baseline always gets stage I's settings and budget. Finished steps are skipped on a rerun.
# Every segmenter arm is trained REPEATS times (default 3) and reported as mean ± std, so a
# change is judged against the seed-to-seed noise; the dual GAN also gets the oracle arm
# (stage II on the real masks).
# Set SYNTHMED to the synthmed executable if it is not on PATH (e.g. .venv/bin/synthmed).
set -euo pipefail

demo_size=128  # the bundled demo models' side (training/demo.py DEMO_DATA)
size=${1:-$demo_size}
work=${2:-runs/evaluate-$size}
synthmed=${SYNTHMED:-synthmed}
gan=(--size "$size" --ngf 32 --ndf 32 --batch-size 16 --seed 2026 --quiet)

step() {  # step OUTPUT COMMAND...: run COMMAND unless OUTPUT already exists
    local output=$1
    shift
    if [[ -e $output ]]; then echo "skip: $output exists"; else "$@"; fi
}

step "$work/real-train" "$synthmed" data phantom --kind retina --count 500 --size "$size" \
    --seed 2026 --out "$work/real-train"
step "$work/real-test" "$synthmed" data phantom --kind retina --count 100 --size "$size" \
    --seed 7 --out "$work/real-test"

dual=()
if [[ $size != "$demo_size" ]]; then  # the demo's own recipe (training/demo.py), at this size
    step "$work/demo/stage2/model.safetensors" "$synthmed" train-demo --size "$size" \
        --out "$work/demo"
    dual=(--stage1 "$work/demo/stage1" --stage2 "$work/demo/stage2")
fi
step "$work/single/model.safetensors" "$synthmed" train single --data "$work/real-train" \
    --out "$work/single" --steps 4000 --max-channels 256 "${gan[@]}"

"$synthmed" evaluate --real "$work/real-train" --real-test "$work/real-test" "${dual[@]}" \
    --single "$work/single" --count 500 --small-data 5,10,20 --repeats "${REPEATS:-3}" \
    --out "$work/report" --force
