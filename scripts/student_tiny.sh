#!/usr/bin/env bash
# Reproduces docs/results.md (student section) from the tiny teacher of scripts/teacher_tiny.sh:
# ODE pairs -> ODE init -> Self-Forcing DMD -> test (T = 4, 8, 16 and held-out closed loops),
# the LoopAug ablation (without the loop term, and without LoopAug data), and the bundled model export.
#   bash scripts/student_tiny.sh                 # everything
#   STAGES="test" bash scripts/student_tiny.sh   # only re-evaluate
set -euo pipefail
STAGES=${STAGES:-"data ode dmd ablation test export"}
TEACHER=runs/teacher_tiny/checkpoints/last.ckpt
SRC='{"rig_mode": "offset", "novel_spread_deg": 25, "texture_scale": 2.0}'
shards() {  # split loopaug out length-args...
  realcam data make-shards --source synthetic --source-args "$SRC" --loopaug "$2" \
    --height 32 --width 32 --seed 0 --split "$1" --out "$3" --overwrite "${@:4}"
}
last() { ls -t runs/$1/checkpoints/last.ckpt | head -1; }
timed() {  # name command... : runs it and appends the wall time to runs/train_times.txt
  local name=$1 start; shift; start=$(date +%s)
  "$@"
  echo "$name: $(( $(date +%s) - start )) s" | tee -a runs/train_times.txt
}
if [[ $STAGES == *data* ]]; then
  # held-out closed loops (every sequence revisits earlier (time, pose) states) for the LoopAug ablation
  shards test orbit_return,pingpong data/tiny/test_loop_T16 --length 16 --num-sequences 24
  # the same training scenes without LoopAug, for the ablation's second student
  shards train none data/tiny/train_noloop --lengths 4,8 --num-sequences 1024 --samples-per-shard 256
fi
if [[ $STAGES == *ode* ]]; then
  timed make-ode-pairs realcam data make-ode-pairs --config configs/teacher/tiny.yaml --teacher $TEACHER \
    --shards data/tiny/train --out data/tiny/ode --steps 25 --num-samples 512 --length-buckets 4 \
    --batch-size 16 --overwrite
  timed fit-ode realcam fit --config configs/student/tiny_ode.yaml --model.init_args.generator_init $TEACHER
fi
if [[ $STAGES == *dmd* ]]; then   # LoopAug data and the loop term (loop_weight 1 in the config): the bundled student
  timed fit-dmd realcam fit --config configs/student/tiny_dmd.yaml \
    --model.init_args.generator_init "$(last student_ode)" --model.init_args.real_score_init $TEACHER
fi
if [[ $STAGES == *ablation* ]]; then   # LoopAug ablation: no loop term; then no loop term and no LoopAug data
  timed fit-dmd-noterm realcam fit --config configs/student/tiny_dmd.yaml \
    --model.init_args.generator_init "$(last student_ode)" --model.init_args.real_score_init $TEACHER \
    --model.init_args.loop_weight 0.0 --trainer.default_root_dir runs/student_dmd_noterm
  timed fit-dmd-noloop realcam fit --config configs/student/tiny_dmd.yaml \
    --model.init_args.generator_init "$(last student_ode)" --model.init_args.real_score_init $TEACHER \
    --model.init_args.loop_weight 0.0 --data.init_args.train_shards data/tiny/train_noloop \
    --trainer.default_root_dir runs/student_dmd_noloop
fi
if [[ $STAGES == *test* ]]; then
  for run in student_ode student_dmd student_dmd_noterm student_dmd_noloop; do
    ls runs/$run/checkpoints/last.ckpt > /dev/null 2>&1 || continue   # ablation not run
    cfg=configs/student/tiny_dmd.yaml; [[ $run == student_ode ]] && cfg=configs/student/tiny_ode.yaml
    for set in test_T4 test_T8 test_T16 test_loop_T16; do
      realcam test --config $cfg --ckpt_path "$(last $run)" --model.init_args.generator_init null \
        $( [[ $cfg == *dmd* ]] && echo --model.init_args.real_score_init null ) \
        --data.init_args.test_shards data/tiny/$set --data.init_args.length_buckets null --eval_name ${set#test_}
    done
  done
  python scripts/collect_results.py runs --runs 'student_*' | tee runs/student_table.md
fi
if [[ $STAGES == *export* ]]; then
  printf '%s\n' "bash scripts/teacher_tiny.sh" "bash scripts/student_tiny.sh" > runs/commands.txt
  realcam export --ckpt "$(last student_dmd)" --out realcam/assets/tiny_student \
    --role student --overwrite --commands-file runs/commands.txt \
    --network-args '{"reproject_copy_gate": 4.0}'    # the parameter-free copy gate, chosen with `realcam eval sweep`
  realcam export --ckpt $TEACHER --out realcam/assets/tiny_teacher \
    --role teacher --overwrite --commands-file runs/commands.txt
fi
