#!/usr/bin/env bash
# Exercise every device path of nmt in one run and print one line of figures per path:
#
#   scripts/gpu_check.sh [--device cuda|cpu] [--config CONFIG] [--steps 50] [--lines 1000] [--work DIR]
#
#   fit        --steps updates with the paper and the cuDNN GRU cells, each in 32-true and bf16-mixed
#              (target tokens/s of the last logged steps, from the run's metrics.csv)
#   translate  --lines of test_2016_flickr with each --dtype (float32, bfloat16, int8): sentences/s
#   evaluate   the same lines with each --dtype, without and with a vocabulary shortlist: BLEU and sentences/s
#   score      the same lines as (source, reference) pairs with each --dtype: pairs/s
#
# The inference paths use the checkpoint of the paper-cell float32 fit (a model of --steps updates: the BLEU
# figures check that the paths work, not the model). On a GPU machine run it as it is (the multi30k RNNsearch
# config); CI runs `--device cpu --config configs/tiny.yaml` with a few steps. Stops at the first path that
# fails, naming it, with a non-zero exit status.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
config=configs/multi30k_en_fr_attention.yaml
steps=50
lines=1000
work=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --lines) lines=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$device" in
  cuda*) accelerator=gpu ;;
  cpu) accelerator=cpu ;;
  *) echo "gpu_check.sh: --device is cuda, cuda:N or cpu, got $device" >&2; exit 2 ;;
esac
if [[ -z "$work" ]]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/nmt-gpu-check.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
python=${PYTHON:-python}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline

now() { "$python" -c 'import time; print(time.perf_counter())'; }
elapsed() { "$python" -c "import sys, time; print(f'{time.perf_counter() - float(sys.argv[1]):.2f}')" "$1"; }
rate() { "$python" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):,.1f}')" "$1" "$2"; }
fail() { echo "gpu_check.sh: FAILED: $1 (output in $work/$2)" >&2; trap - EXIT; exit 1; }

# the first --lines lines of the test set, as plain text
zcat data/multi30k/test_2016_flickr.en.gz | awk -v n="$lines" "NR <= n" > "$work/test.en"  # awk reads to the end: no SIGPIPE
zcat data/multi30k/test_2016_flickr.fr.gz | awk -v n="$lines" "NR <= n" > "$work/test.fr"
n=$(wc -l < "$work/test.en")
echo "device $device ($("$python" -c 'import torch, sys
d = sys.argv[1]
print(torch.cuda.get_device_name(torch.device(d)) if d.startswith("cuda") else f"{torch.get_num_threads()} CPU threads")' "$device")), torch $("$python" -c 'import torch; print(torch.__version__)'), config $config"

for cell in paper cudnn; do
  for precision in 32-true bf16-mixed; do
    run="$work/fit-$cell-$precision"
    start=$(now)
    "$python" -m nmt fit --config "$config" --trainer.accelerator "$accelerator" --trainer.devices 1 \
      --trainer.max_steps "$steps" --trainer.limit_val_batches 0 --trainer.log_every_n_steps 5 \
      --trainer.enable_progress_bar false --trainer.precision "$precision" --model.network.cell "$cell" \
      --data.data_dir "$PWD/data/multi30k" --data.cache_dir "$work/cache" --trainer.default_root_dir "$run" \
      > "$run.log" 2>&1 \
      || fail "fit cell=$cell precision=$precision" "fit-$cell-$precision.log"
    seconds=$(elapsed "$start")
    tokens=$("$python" - "$run" <<'EOF'
import csv, glob, sys
rows = [r for f in glob.glob(f"{sys.argv[1]}/logs/*/metrics.csv") for r in csv.DictReader(open(f))]
speeds = [float(r["train/tgt_tokens_per_s"]) for r in rows if r.get("train/tgt_tokens_per_s")]
print(f"{speeds[-1]:,.0f}" if speeds else "n/a")
EOF
)
    echo "fit cell=$cell precision=$precision: $steps steps in $seconds s (start-up included), $tokens target tokens/s"
  done
done

checkpoint="$work/fit-paper-32-true/checkpoints/last.ckpt"
[[ -f "$checkpoint" ]] || fail "fit wrote no checkpoint $checkpoint" "fit-paper-32-true.log"
"$python" -m nmt shortlist --checkpoint "$checkpoint" --source data/multi30k/train.en.gz \
  --target data/multi30k/train.fr.gz --output "$work/lex.tsv" > "$work/shortlist.log" 2>&1 \
  || fail "shortlist" "shortlist.log"

for dtype in float32 bfloat16 int8; do
  start=$(now)
  "$python" -m nmt translate --checkpoint "$checkpoint" --input "$work/test.en" --output "$work/hyp.$dtype" \
    --device "$device" --dtype "$dtype" --no-progress 2> "$work/translate-$dtype.log" \
    || fail "translate dtype=$dtype" "translate-$dtype.log"
  seconds=$(elapsed "$start")
  [[ $(wc -l < "$work/hyp.$dtype") -eq $n ]] || fail "translate dtype=$dtype wrote a wrong number of lines" "hyp.$dtype"
  echo "translate dtype=$dtype: $n lines in $seconds s, $(rate "$n" "$seconds") sentences/s (whole command)"

  for shortlist in none "$work/lex.tsv"; do
    extra=() label=full
    if [[ "$shortlist" != none ]]; then extra=(--shortlist "$shortlist"); label=shortlist; fi
    start=$(now)
    "$python" -m nmt evaluate --checkpoint "$checkpoint" --src "$work/test.en" --ref "$work/test.fr" \
      --device "$device" --dtype "$dtype" --no-progress "${extra[@]}" > "$work/evaluate-$dtype-$label.out" \
      2> "$work/evaluate-$dtype-$label.log" || fail "evaluate dtype=$dtype vocabulary=$label" "evaluate-$dtype-$label.log"
    seconds=$(elapsed "$start")
    bleu=$(grep -o '^BLEU[^=]*= *[0-9.]*' "$work/evaluate-$dtype-$label.out" | grep -o '[0-9.]*$' || echo n/a)
    echo "evaluate dtype=$dtype vocabulary=$label: BLEU $bleu, $n lines in $seconds s, $(rate "$n" "$seconds") sentences/s"
  done

  start=$(now)
  "$python" -m nmt score --checkpoint "$checkpoint" --src "$work/test.en" --tgt "$work/test.fr" \
    --output "$work/scores.$dtype" --device "$device" --dtype "$dtype" 2> "$work/score-$dtype.log" \
    || fail "score dtype=$dtype" "score-$dtype.log"
  seconds=$(elapsed "$start")
  [[ $(wc -l < "$work/scores.$dtype") -eq $n ]] || fail "score dtype=$dtype wrote a wrong number of lines" "scores.$dtype"
  echo "score dtype=$dtype: $n pairs in $seconds s, $(rate "$n" "$seconds") pairs/s (whole command)"
done
echo "all paths passed"
