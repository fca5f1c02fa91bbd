#!/usr/bin/env bash
# The source study's experiment for a conditional StyleGAN2, per class: a segmentation U-Net
# trained on real only vs real + synthetic (and synthetic only), tested on held-out real images.
#
#   benchmarks/evaluate_cstylegan2.sh RUN [WORK] [CLASS=TRAIN_DIR,TEST_DIR ...]
#                                                      (default WORK: runs/evaluate-cstylegan2)
#
# For every class of RUN (a `synthmed train stylegan2` run) this runs
#   synthmed evaluate --cstylegan2 RUN --label CLASS --real TRAIN --real-test TEST
# into WORK/report-CLASS, then prints one per-class table and writes it as JSON to $RESULTS.
# Real data of a class, first that applies:
#   training pairs:  TRAIN_DIR given as CLASS=TRAIN_DIR,TEST_DIR; else the folder RUN was
#                    trained on for that class (config.json records it); else, for a class
#                    named retina or cells, $PHANTOMS phantoms of seed $TRAIN_SEED written to
#                    WORK/real/CLASS/train;
#   held-out pairs:  TEST_DIR; else, for retina or cells, $TEST_PHANTOMS phantoms of seed
#                    $TEST_SEED written to WORK/real/CLASS/test (retina colour, cells grayscale).
# The held-out seed must differ from the seed of the phantoms RUN was trained on.
# Settings (environment): COUNT synthetic pairs per class (500), SMALL_DATA (5,10,20; empty for
# none), REPEATS (3: training runs per segmenter arm, reported as mean ± std), TRUNCATION (1),
# PHANTOMS (500), TEST_PHANTOMS (100), TRAIN_SEED (2026), TEST_SEED (7),
# RESULTS (benchmarks/results/evaluation-cstylegan2.json), EVALUATE_ARGS (more `synthmed
# evaluate` options, e.g. "--seg-steps 50 --quiet"). Set SYNTHMED to the synthmed executable and
# PYTHON to the matching python if they are not on PATH (e.g. .venv/bin/synthmed, .venv/bin/python).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
run=$1
work=${2:-runs/evaluate-cstylegan2}
shift $(($# < 2 ? $# : 2))
synthmed=${SYNTHMED:-synthmed}
python=${PYTHON:-python}
helper=$(dirname "$0")/cstylegan2_classes.py
results=${RESULTS:-benchmarks/results/evaluation-cstylegan2.json}
small_data=${SMALL_DATA-5,10,20}
read -r -a extra <<< "${EVALUATE_ARGS:-}"

declare -A given_train given_test
for pair in "$@"; do  # CLASS=TRAIN_DIR,TEST_DIR
    name=${pair%%=*} dirs=${pair#*=}
    if [[ $pair != *=*,* ]]; then
        echo "Error: expected CLASS=TRAIN_DIR,TEST_DIR, got $pair" >&2
        exit 2
    fi
    given_train[$name]=${dirs%%,*}
    given_test[$name]=${dirs#*,}
done

phantoms() {  # phantoms NAME SIZE GRAY COUNT SEED OUT: write class NAME's phantoms to OUT
    local name=$1 size=$2 gray=$3 count=$4 seed=$5 out=$6
    if [[ $name != retina && $name != cells ]]; then
        echo "Error: class $name has no real data: pass $name=TRAIN_DIR,TEST_DIR" >&2
        exit 2
    fi
    if [[ -e $out ]]; then echo "skip: $out exists" >&2; return; fi
    local tone=()
    [[ $gray == 1 ]] && tone=(--grayscale)
    "$synthmed" data phantom --kind "$name" --count "$count" --size "$size" --seed "$seed" \
        "${tone[@]}" --out "$out" >&2
}

classes=$("$python" "$helper" classes "$run")
reports=()
while IFS=$'\t' read -r -u 3 index name size gray recorded; do
    train=${given_train[$name]:-}
    if [[ -z $train && $recorded != - && -d $recorded ]]; then train=$recorded; fi
    if [[ -z $train ]]; then
        train=$work/real/$name/train
        phantoms "$name" "$size" "$gray" "${PHANTOMS:-500}" "${TRAIN_SEED:-2026}" "$train"
    fi
    test=${given_test[$name]:-}
    if [[ -z $test ]]; then
        test=$work/real/$name/test
        phantoms "$name" "$size" "$gray" "${TEST_PHANTOMS:-100}" "${TEST_SEED:-7}" "$test"
    fi
    echo "== class $index ($name): real $train, held-out $test"
    options=(--count "${COUNT:-500}" --repeats "${REPEATS:-3}")
    [[ -n $small_data ]] && options+=(--small-data "$small_data")
    [[ -n ${TRUNCATION:-} ]] && options+=(--truncation "$TRUNCATION")
    "$synthmed" evaluate --cstylegan2 "$run" --label "$name" --real "$train" --real-test "$test" \
        "${options[@]}" "${extra[@]}" --out "$work/report-$name" --force
    reports+=("$work/report-$name")
done 3<<< "$classes"

"$python" "$helper" combine --out "$results" "${reports[@]}"
