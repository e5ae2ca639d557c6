#!/usr/bin/env bash
# Issue 20's learning evidence: evaluate a run's checkpoints as they appear (docs/learning.md).
#   bash scripts/learning_eval.sh RUN_WORKDIR OUT_DIR STEP [STEP ...]
# For each STEP (waiting for RUN_WORKDIR/checkpoints/STEP to be whole): evaluate.py on every test clip (32 frames
# each: self and cross protocols) -> OUT_DIR/eval_STEP.json; the four face-L1 baselines on the seen identities'
# held-out frames (+ a grid) and on the unseen identities -> OUT_DIR/baselines_{seen,unseen}_STEP.json.
# Heavy steps take /tmp/headgan-cpu.lock so that they never share the CPU with another heavy job's timing.
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1; out=$2; shift 2
mkdir -p "$out"
py=.venv/bin/python
for step in "$@"; do
  until [ -f "$run/checkpoints/$step/_CHECKPOINT_METADATA" ] || [ -f "$run/checkpoints/$step/commit_success.txt" ]; do
    sleep 30
  done
  if [ ! -f "$out/eval_$step.json" ]; then
    flock /tmp/headgan-cpu.lock nice -n 5 $py evaluate.py --workdir "$run" --checkpoint "$step" \
      --out "$out/eval_$step.json" --max_frames 32 --no_progress > "$out/eval_$step.log" 2>&1
  fi
  for ids in seen unseen; do
    [ -f "$out/baselines_${ids}_$step.json" ] && continue
    grid=(); [ "$ids" = seen ] && grid=(--grid "$out/grid_$step.png")
    flock /tmp/headgan-cpu.lock nice -n 5 $py -m headgan_jax.train.baselines --workdir "$run" --step "$step" \
      --identities "$ids" "${grid[@]}" > "$out/baselines_${ids}_$step.log" 2>&1
    tail -n 1 "$out/baselines_${ids}_$step.log" > "$out/baselines_${ids}_$step.json"
  done
  echo "$(date -u +%H:%M) step $step evaluated"
done
