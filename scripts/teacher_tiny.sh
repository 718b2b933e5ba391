#!/usr/bin/env bash
# Reproduces docs/results.md (teacher section): data, the tiny interleaved teacher and the prefix ablation,
# then the test set at T, 2T and 4T for both. Run from the repository root after `pip install -e .`.
#   bash scripts/teacher_tiny.sh            # everything
#   STAGES="test" bash scripts/teacher_tiny.sh   # only re-evaluate existing checkpoints
set -euo pipefail
STAGES=${STAGES:-"data fit test"}
SRC='{"rig_mode": "offset", "novel_spread_deg": 25, "texture_scale": 2.0}'
shards() {  # split length-args out
  realcam data make-shards --source synthetic --source-args "$SRC" --loopaug pingpong,orbit_return,none \
    --height 32 --width 32 --seed 0 --split "$1" --out "$3" --overwrite "${@:4}" $2
}
if [[ $STAGES == *data* ]]; then
  shards train "--lengths 4,8" data/tiny/train --num-sequences 4096 --samples-per-shard 256
  shards val "--length 8" data/tiny/val --num-sequences 16
  shards val "--length 4" data/tiny/val_T4 --num-sequences 16   # the teacher's: its buckets keep all 4 steps, revisits too
  for T in 4 8 16; do shards test "--length $T" data/tiny/test_T$T --num-sequences 24; done
fi
if [[ $STAGES == *fit* ]]; then
  for layout in tiny tiny_prefix; do
    start=$(date +%s)
    realcam fit --config configs/teacher/$layout.yaml --trainer.default_root_dir runs/teacher_$layout
    echo "$layout: trained in $(( $(date +%s) - start )) s" | tee -a runs/train_times.txt
  done
fi
if [[ $STAGES == *test* ]]; then
  for layout in tiny tiny_prefix; do
    for T in 4 8 16; do     # reports in runs/teacher_$layout/test/T$T/
      realcam test --config configs/teacher/$layout.yaml --ckpt_path runs/teacher_$layout/checkpoints/last.ckpt \
        --data.init_args.test_shards data/tiny/test_T$T --data.init_args.length_buckets null --eval_name T$T
    done
  done
  python scripts/collect_results.py runs --runs 'teacher_*' | tee runs/teacher_table.md
fi
