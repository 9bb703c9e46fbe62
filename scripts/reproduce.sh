#!/usr/bin/env bash
# Regenerate every JSON record behind the numbers and figures in docs/ (bench/results/).
#
#   bash scripts/reproduce.sh            # the documented sizes: hours on 2 CPU cores
#   bash scripts/reproduce.sh --quick    # every command at a small size (minutes): checks that
#                                        # each still runs; records go to bench/results/quick/
#   bash scripts/reproduce.sh --only experiments|benches|NAME[,NAME...]   (NAME: a record's name,
#                                        # e.g. demo_modular,digits_memorization or reduce)
#
# Each step is one committed command that writes a record (command, commit, machine, load,
# versions, config, result; see bench/_record.py). The docs cite the records by file name and
# scripts/docs_numbers.py (run at the end, and by the test suite) checks every quoted number
# against them: after a full run, update the cited file names and the numbers that changed.
# Benchmarks record the machine's load per round; run them on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0; ONLY=all
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --only) ONLY=$2; shift ;;
        *) echo "usage: bash scripts/reproduce.sh [--quick] [--only experiments|benches|NAME,...]" >&2
           exit 2 ;;
    esac
    shift
done
[[ -x .venv/bin/python ]] || bash scripts/setup.sh
. .venv/bin/activate
export NLTK_DATA=${NLTK_DATA:-$PWD/.cache/nltk_data}
python -m losskernel_dist.analysis.wordnet setup "$NLTK_DATA" > /dev/null

step() { echo; echo "=== reproduce: $*"; "$@"; }
wanted() {  # wanted GROUP NAME: is this step selected by --only?
    [[ $ONLY == all || $ONLY == "$1" || ",$ONLY," == *",$2,"* ]]
}
QUICKFLAG=(); [[ $QUICK == 1 ]] && QUICKFLAG=(--quick)
exp() { wanted experiments "$1" || return 0; step python bench/experiment.py "$@" "${QUICKFLAG[@]}"; }
small() { [[ $QUICK == 1 ]] && echo "$1" || echo "$2"; }   # small QUICK_VALUE FULL_VALUE

# docs/results.md
    exp demo_modular configs/demo_modular.yaml \
        --set "task.args.n_eval=$(small 200 2000)" --set "eval.batch_size=$(small 200 2000)" \
        --figures demo_modular_umap.png=analysis/umap2d_label.png \
                  demo_modular_pc1.png=analysis/pc1_groups.png \
                  demo_modular_cov_pairs.png=analysis/covariance_pairs.png
    exp modular_n10k configs/demo_modular.yaml \
        --set "task.args.n_eval=$(small 400 10000)" --set "eval.batch_size=$(small 400 2500)" \
        --set "reduce.block_size=$(small 400 2500)" \
        --figures modular_n10k_umap.png=analysis/umap2d_label.png \
                  modular_n10k_umap_dividend_zero.png=analysis/umap2d_attribute_dividend_zero.png \
                  modular_n10k_cov_pairs.png=analysis/covariance_pairs.png
    exp modular_development configs/modular_development.yaml \
        --set "task.args.n_eval=$(small 100 400)" --set "eval.batch_size=$(small 100 400)" \
        --set "reduce.block_size=$(small 100 400)" \
        --figures modular_development_maps.png=development_maps.png
    exp digits_memorization configs/digits_memorization.yaml
    # the calibration grid of the demo (N = 400 eval samples) ...
    exp calibrate_demo configs/demo_modular.yaml --command calibrate \
        --set "task.args.n_eval=$(small 100 400)" --set "eval.batch_size=$(small 100 400)" \
        --set "calibrate.lr=$(small '[2.0e-7]' '[5.0e-8,2.0e-7,5.0e-7]')" \
        --set "calibrate.localization=$(small '[3.0e6]' '[1.0e5,1.0e6,3.0e6]')" \
        --set "calibrate.chains_per_setting=$(small 2 4)" \
        --set "calibrate.steps=$(small 40 200)" --set "calibrate.draws=$(small 8 50)"
    # ... and at the paper's localization 30,000, which configs/modular_full.yaml keeps
    exp calibrate_modular_full configs/modular_full.yaml --command calibrate \
        --set "task.args.n_eval=$(small 100 400)" --set "eval.batch_size=$(small 100 400)" \
        --set "calibrate.lr=$(small '[3.0e-8]' '[1.0e-8,3.0e-8,1.0e-7,3.0e-7]')" \
        --set "calibrate.localization=[3.0e4]" --set "calibrate.chains_per_setting=$(small 2 4)" \
        --set "calibrate.steps=$(small 40 300)" --set "calibrate.draws=$(small 8 50)"

# docs/performance.md: each bench writes bench/results/NAME-*.json (NAME as for --only)
bench() {  # bench NAME QUICK_ARGS -- FULL_ARGS: run bench/NAME.py with one set of arguments
    local name=$1 quick=() full=(); shift
    while [[ $# -gt 0 && $1 != -- ]]; do quick+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    full=("$@")
    wanted benches "$name" || return 0
    if [[ $QUICK == 1 ]]; then step python "bench/$name.py" "${quick[@]}"
    else step python "bench/$name.py" "${full[@]}"; fi
}
[[ $QUICK == 1 ]] && export LOSSKERNEL_RECORDS_DIR=$PWD/bench/results/quick
bench reduce --n 1500 --m 100 --rounds 1 --before-commit 4638b7a -- --rounds 7 --before-commit 4638b7a
bench components --only reduce_tile --block 256 --m 64 -- --only reduce_tile
bench reduce --rounds 1 --n 500 --m 50 --only-topk --topk-n 2000 --topk-m 16 -- \
    --only-topk --topk-n 20000 --topk-m 64
bench reduce --rounds 1 --n 500 --m 50 --big-n 3000 --big-m 20 -- --rounds 1 --big-n 20000 --big-m 200
bench reduce --rounds 1 --only-cluster --cluster-n 3000 --cluster-m 20 --cluster-rounds 1 -- \
    --only-cluster --cluster-n 50000 --cluster-m 200 --cluster-rounds 2
bench engines --n 2000 --m 16 --threads 1 -- --n 10000 --m 64 --threads 1
bench sampling --n-eval 200 --draws 4 --burnin 2 --repeats 1 --
bench autocast --n-eval 200 --draws 5 --repeats 1 --threads 1 -- --threads 1
bench writer --draws 8 --burnin 4 --repeats 1 --
bench writer --draws 8 --burnin 4 --repeats 1 --checkpoint-every 2 --queues 0,4 --durable 0,1 -- \
    --checkpoint-every 2 --queues 0,4 --durable 0,1 --repeats 2
bench explorer --n 500 --repeats 1 -- --n 2000 100000 --repeats 2
bench imagenet_decode --images 16 --rounds 1 --
bench hf --n 48 --seq-len 8 --width 32 --heads 2 --vocab 300 --train-steps 3 --chains 2 --draws 2 \
    --burnin 1 --batch-size 8 --eval-batch 16 --threads 1 --rounds 1 --variants plain,ours -- \
    --draws 5 --burnin 5 --rounds 3 --threads 1 --eval-batch 256 \
    --variants plain,ours,ours_2ranks,devinterp
bench tokens --sequences 12 --tokens 6 --train-sequences 40 --width 32 --heads 2 --vocab 300 \
    --train-steps 3 --chains 2 --draws 3 --burnin 2 --batch-size 8 --eval-batch 20 --threads 1 -- \
    --threads 1 --draws 50
if [[ -x .venv-devinterp/bin/python ]]; then   # bash bench/devinterp_setup.sh makes it
    bench devinterp --n-eval 64 --chains 2 --draws 3 --burnin 2 --train-steps 5 --ranks 2 \
        --variants devinterp,floor,ours,ranks -- \
        --n-eval 256 --chains 2 --draws 5 --ranks 2 --variants devinterp,floor,ours,ranks
else
    echo "reproduce: no .venv-devinterp (bash bench/devinterp_setup.sh): bench/devinterp.py skipped"
fi

echo
if [[ $QUICK == 1 ]]; then   # the quick records hold other sizes: compare their structure
    step python scripts/docs_numbers.py --against bench/results/quick
else
    step python scripts/docs_numbers.py
fi
