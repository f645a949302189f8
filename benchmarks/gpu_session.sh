#!/usr/bin/env bash
# Every GPU run of a session, by part, each printing a short table last:
#   bash benchmarks/gpu_session.sh bench     # render + train throughput (H100)
#   bash benchmarks/gpu_session.sh render    # render throughput only, clevr and driving, batch 2048
#   bash benchmarks/gpu_session.sh align     # training throughput: no alignment, aligned, aligned + --grl-bound
#   bash benchmarks/gpu_session.sh issue4    # clevr 1000 train / 200 val, train <= 10 min, eval
#   bash benchmarks/gpu_session.sh table ENV TARGET_ENV K [extra tables.py args]
#   bash benchmarks/gpu_session.sh smoke     # every command once on CUDA, tiny (after a redesign)
#   bash benchmarks/gpu_session.sh fast      # fast vs frcnn throughput, fast accuracy, smoke of both (<= 6 min)
#   bash benchmarks/gpu_session.sh demo [sim2sg demo args]   # the demo's full preset, report copied to $OUT
#   bash benchmarks/gpu_session.sh seeds [demo_seeds.py args]  # the full preset per seed (one call a seed), results to $OUT;
#                                      then here: python benchmarks/demo_seeds.py --collect seed*_results.json --seeds ...
# Needs (carried, since the GPU machine has no network): .whl/ (usd-core, pycocotools, moderngl,
# glcontext cp312 wheels) and .gl/ (EGL/GL loader debs). Writes logs under $OUT (or out/gpu).
set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
OUTDIR=${OUT:-out/gpu}
mkdir -p "$OUTDIR"
if [ -d .gl ]; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || { echo "editable install failed"; exit 1; }
S="python3 -m sim2sg"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
part=${1:-bench}
shift || true

case "$part" in
bench)
  python3 benchmarks/render.py --device cuda --batch 1024 --scenes 16 --iters 5 --compile 2>&1 | tee "$OUTDIR/render_cuda_compiled.txt" | tail -25
  python3 benchmarks/render.py --device cuda --batch 1024 --scenes 16 --iters 5 --no-gl 2>&1 | tee "$OUTDIR/render_cuda_eager.txt" | tail -12
  python3 benchmarks/train.py --device cuda --size 256 --batch 32 --steps 30 --backbone resnet18 resnet50 --align none both 2>&1 | tee "$OUTDIR/train_cuda.txt" | tail -12
  ;;
render)
  python3 benchmarks/render.py --device cuda --batch 2048 --scenes 16 --iters 5 --compile \
      --envs clevr:256x256,driving:640x192 2>&1 | tee "$OUTDIR/render_cuda.txt" | tail -8
  ;;
align)  # training throughput with alignment: plain summed gradient vs --grl-bound (a second backward pass)
  python3 benchmarks/train.py --device cuda --size 256 --batch 32 --steps 30 --align none both --grl-bound 0 0.1 \
      2>&1 | tee "$OUTDIR/train_align_cuda.txt" | tail -6
  ;;
profile)  # training step: batch scaling and where the time goes
  python3 benchmarks/train.py --device cuda --size 256 --batch 16 32 64 --steps 10 --profile 2>&1 | tee "$OUTDIR/train_profile.txt" | head -8
  ;;
issue4)
  D=/tmp/clevr4
  t0=$(date +%s)
  $S sample --env clevr --count 1000 --seed 0 --out $D/train >/dev/null
  $S sample --env clevr --count 200 --seed 1 --out $D/val >/dev/null
  $S graph2usd $D/train/graphs --out $D/train/usd >/dev/null
  $S graph2usd $D/val/graphs --out $D/val/usd >/dev/null
  $S render $D/train/usd --out $D/train/data --size 256x256 --device cuda --batch 256 --no-progress 2>&1 | tail -1
  $S render $D/val/usd --out $D/val/data --size 256x256 --device cuda --batch 256 --no-progress 2>&1 | tail -1
  t1=$(date +%s); echo "data: $((t1 - t0)) s"
  STEPS=${STEPS:-1800}
  rm -rf $D/run  # a warm machine's earlier run: train refuses to replace it
  timeout 560 $S train --source $D/train/data --val $D/val/data --out $D/run --steps $STEPS --batch 32 --lr 2e-3 \
      --device cuda --no-progress --checkpoint-every 100000 --image-every 0 2>&1 | tail -3
  t2=$(date +%s); echo "train+val: $((t2 - t1)) s for $STEPS steps"
  cp $D/run/val_metrics.json "$OUTDIR/issue4_val_metrics.json" 2>/dev/null
  $S eval --predictions $D/run/val_predictions.json --data $D/val/data --out "$OUTDIR/issue4_eval.json" 2>&1 | tail -30
  ;;
rescore)  # issue 21: the box-level rescoring head (a patch in benchmarks/log, not shipped) at 256 px
  git apply benchmarks/log/2026-12-07-session5-box-rescore.patch || exit 1
  D=/tmp/rescore; STEPS=${STEPS:-1500}
  $S sample --env clevr --count 1000 --seed 0 --out $D/train >/dev/null
  $S sample --env clevr-target --count 200 --seed 7 --out $D/tgt >/dev/null
  for x in train tgt; do
    $S graph2usd $D/$x/graphs --out $D/$x/usd >/dev/null
    $S render $D/$x/usd --out $D/$x/data --size 256x256 --device cuda --batch 256 --no-progress 2>&1 | tail -1
  done
  for r in false true; do
    t0=$(date +%s); rm -rf $D/run_$r
    $S train --source $D/train/data --out $D/run_$r --model fast --set box_rescore=$r --steps $STEPS --batch 32 \
        --lr 2e-3 --device cuda --no-progress --checkpoint-every 100000 --image-every 0 2>&1 | tail -1
    echo "box_rescore=$r: $(( $(date +%s) - t0 )) s for $STEPS steps"
  done
  python3 benchmarks/detection_breakdown.py $D/run_false/checkpoint.pt $D/tgt/data $D/run_true/checkpoint.pt $D/tgt/data \
      --device cuda 2>&1 | tail -40
  ;;
smoke)  # every command once on CUDA at a tiny size; a table of what passed
  D=/tmp/smoke; rm -rf $D; declare -A R
  ok() { R[$1]=$([ "$2" = 0 ] && echo pass || echo "FAIL ($2)"); }
  $S sample --env clevr --count 8 --seed 0 --out $D/src >/dev/null; ok sample $?
  $S graph2usd $D/src/graphs --out $D/src/usd >/dev/null; ok graph2usd $?
  $S render $D/src/usd --out $D/src/data --size 96x96 --device cuda --no-progress 2>&1 | tail -1; ok render $?
  $S sample --env clevr-target --count 4 --seed 1 --out $D/tgt >/dev/null && $S graph2usd $D/tgt/graphs --out $D/tgt/usd >/dev/null \
    && $S render $D/tgt/usd --out $D/tgt/data --size 96x96 --device cuda --no-progress >/dev/null 2>&1; ok target $?
  $S train --source $D/src/data --target $D/tgt/data/images --align both --grl-bound 0.1 --steps 4 --checkpoint-every 2 \
    --batch 4 --out $D/run --device cuda --no-progress 2>&1 | tail -1; ok train $?
  $S train --source $D/src/data --out $D/run --steps 6 --resume --device cuda --no-progress 2>&1 | tail -1; ok resume $?
  $S eval --checkpoint $D/run/checkpoint.pt --data $D/tgt/data --out $D/eval.json 2>&1 | tail -2; ok eval $?
  $S predict $D/tgt/data/images --checkpoint $D/run/checkpoint.pt --out $D/pred --score-thresh 0 2>&1 | tail -1; ok predict $?
  $S loop --env clevr --target $D/tgt/data/images --out $D/loop --loop 2 --align all --size 96x96 --sdr-scenes 8 \
    --sdr-steps 4 --iter-steps 2 --batch 4 --score-thresh 0 --min-fit-iou 0 --target-bn --target-textures \
    --eval-data $D/tgt/data --target-graphs $D/tgt/graphs --device cuda --no-progress 2>&1 | tail -2; ok loop $?
  $S loop --env clevr --target $D/tgt/data/images --out $D/loopd --loop 1 --align label --size 96x96 --sdr-scenes 8 \
    --sdr-steps 2 --iter-steps 2 --batch 4 --deterministic --device cuda --no-progress 2>&1 | tail -1; ok loop_deterministic $?
  $S loop --env clevr --target $D/tgt/data/images --out $D/loopf --loop 1 --align all --size 96x96 --sdr-scenes 8 \
    --sdr-steps 4 --iter-steps 2 --batch 4 --score-thresh 0 --model fast --target-bn --device cuda --no-progress 2>&1 | tail -1; ok loop_fast $?
  $S train --source $D/src/data --out $D/runf --model fast --steps 4 --batch 4 --device cuda --no-progress 2>&1 | tail -1; ok train_fast $?
  timeout 200 python3 benchmarks/train.py --model fast frcnn --device cuda --size 256 --batch 64 --steps 20 --align none both \
    --grl-bound 0 0.5 --infer-batch 256 2>&1 | tee "$OUTDIR/train_fast_frcnn.txt" | tail -14; ok train_bench $?
  timeout 250 python3 benchmarks/accuracy.py --model fast --device cuda --seconds 100 --train 2000 --test 200 2>&1 \
    | tee "$OUTDIR/accuracy_fast.txt" | tail -8; ok accuracy_fast $?
  echo "smoke on $(nvidia-smi --query-gpu=name --format=csv,noheader)"
  for k in sample graph2usd render target train resume eval predict loop loop_deterministic loop_fast train_fast train_bench accuracy_fast; do printf "%-20s %s\n" $k "${R[$k]}"; done
  ;;
fast)  # issue 21 in one call (<= 9 min): a smoke of both models first, then throughput, then accuracy
  D=/tmp/fast; rm -rf $D; declare -A R
  ok() { R[$1]=$([ "$2" = 0 ] && echo pass || echo "FAIL ($2)"); }
  $S sample --env clevr --count 8 --seed 0 --out $D/src >/dev/null && $S graph2usd $D/src/graphs --out $D/src/usd >/dev/null \
    && $S render $D/src/usd --out $D/src/data --size 96x96 --device cuda --no-progress >/dev/null 2>&1; ok render $?
  $S sample --env clevr-target --count 4 --seed 1 --out $D/tgt >/dev/null && $S graph2usd $D/tgt/graphs --out $D/tgt/usd >/dev/null \
    && $S render $D/tgt/usd --out $D/tgt/data --size 96x96 --device cuda --no-progress >/dev/null 2>&1; ok target $?
  timeout 60 $S train --source $D/src/data --target $D/tgt/data/images --align both --grl-bound 0.1 --steps 4 --checkpoint-every 2 \
    --batch 4 --out $D/run --device cuda --no-progress 2>&1 | tail -1; ok train_frcnn $?
  timeout 30 $S eval --checkpoint $D/run/checkpoint.pt --data $D/tgt/data 2>&1 | tail -1; ok eval $?
  for m in fast frcnn; do timeout 60 $S loop --env clevr --target $D/tgt/data/images --out $D/loop_$m --loop 2 --align all \
    --size 96x96 --sdr-scenes 8 --sdr-steps 4 --iter-steps 2 --batch 4 --score-thresh 0 --min-fit-iou 0 --target-bn \
    --target-textures --model $m --eval-data $D/tgt/data --device cuda --no-progress 2>&1 | tail -1; ok loop_$m $?; done
  timeout 150 python3 benchmarks/train.py --model fast frcnn --device cuda --size 256 --batch 64 --steps 15 --warmup 3 \
    --align none both --infer-batch 256 2>&1 | tee "$OUTDIR/train_fast_frcnn.txt" | tail -8; ok throughput $?
  timeout 120 python3 benchmarks/train.py --model fast --compile --device cuda --size 256 --batch 64 128 --steps 15 --warmup 8 \
    --align none both --infer-batch 512 2>&1 | tee "$OUTDIR/train_fast_compiled.txt" | tail -8; ok throughput_compiled $?
  timeout 200 python3 benchmarks/accuracy.py --model fast --device cuda --seconds 110 --train 2000 --test 200 2>&1 \
    | tee "$OUTDIR/accuracy_fast.txt" | tail -8; ok accuracy_fast $?
  echo "fast on $(nvidia-smi --query-gpu=name --format=csv,noheader)"
  for k in render target train_frcnn eval loop_fast loop_frcnn throughput throughput_compiled accuracy_fast; do printf "%-20s %s\n" $k "${R[$k]}"; done
  ;;
demo)  # `sim2sg demo --preset full` as a user runs it; its report and log come back
  D=${DEMO_DIR:-/tmp/demo_full}
  t0=$(date +%s)
  timeout "${DEMO_TIMEOUT:-540}" $S demo --preset full --device cuda --out $D "$@" > "$OUTDIR/demo_log.txt" 2>&1
  rc=$?; t1=$(date +%s)
  cp -r $D/report "$OUTDIR/demo_report" 2>/dev/null
  grep -E "^-- phase|^\[.*\] step [0-9]+ \(|demo finished|report:" "$OUTDIR/demo_log.txt" | tail -40
  echo "demo: exit $rc after $((t1 - t0)) s; $(du -sh $D 2>/dev/null | cut -f1) in $D"
  cat $D/report/table.md 2>/dev/null
  ;;
seeds)  # benchmarks/demo_seeds.py on the full preset; each seed's report and the seeds page come back
  D=${SEEDS_DIR:-/tmp/demo_seeds}
  t0=$(date +%s)
  timeout "${DEMO_TIMEOUT:-555}" python3 benchmarks/demo_seeds.py --preset full --device cuda --out $D "$@" \
      > "$OUTDIR/seeds_log.txt" 2>&1
  rc=$?; t1=$(date +%s)
  # A reply brings back at most 8 files: each seed's results and table (a warm machine keeps the
  # seeds of earlier calls, and `--seeds 0 1 2` then runs only the missing ones), the seeds page, the log.
  for r in $D/seed*/report; do s=$(basename $(dirname $r)); cp $r/results.json "$OUTDIR/${s}_results.json"
    cp $r/table.md "$OUTDIR/${s}_table.md"; done 2>/dev/null
  cp $D/seeds.md "$OUTDIR/" 2>/dev/null
  grep -E "^-- phase|demo finished" "$OUTDIR/seeds_log.txt" | tail -30
  echo "seeds: exit $rc after $((t1 - t0)) s"
  cat $D/seeds.md 2>/dev/null
  ;;
table)
  SRC=${1:-clevr}; TGT=${2:-clevr-target}; K=${3:-20}; shift 3 || true
  T=${TABLE_TIMEOUT:-540}
  D=${TABLE_DIR:-/tmp/table_$SRC}  # on a warm machine a later call can add rows to the same folder
  # Parallel rows share one GPU: no fragmentation reserve per process, and the peak memory logged.
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -l 2 > /tmp/gpu_mem.txt 2>/dev/null &
  MEM=$!
  timeout "$T" python3 benchmarks/tables.py --source "$SRC" --target "$TGT" --k "$K" --out $D \
      --domain /tmp/domain_$TGT --device cuda "$@" > "$OUTDIR/table_${SRC}_log.txt" 2>&1
  kill $MEM 2>/dev/null
  # memory: is it what bounds --parallel; utilization (share of time a kernel ran): would more rows gain
  awk -F', ' '{m = $1 > m ? $1 : m; u += $2; n++} END {if (n) printf "peak GPU memory used: %d MiB; GPU busy %.0f%% of %d samples\n", m, u / n, n}' /tmp/gpu_mem.txt
  # Whatever finished (or got as far as it could before the timeout) goes into the table.
  python3 benchmarks/tables.py --source "$SRC" --target "$TGT" --k "$K" --out $D --collect "$@" \
      > "$OUTDIR/table_${SRC}.md" 2>&1
  cp $D/results_collected.json "$OUTDIR/table_${SRC}_results.json" 2>/dev/null
  cp $D/curves_collected.png "$OUTDIR/table_${SRC}_curves.png" 2>/dev/null
  (cd $D && tar czf "$OUTDIR/table_${SRC}_histories.tgz" */history.json */graphs/iter1.jsonl.gz 2>/dev/null)
  grep -v "^\[" "$OUTDIR/table_${SRC}_log.txt" | tail -5
  # Where each row's time went, phase by phase (synthesis: predict / lift + crops / build + render).
  python3 - "$D" <<'PY'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*/history.json")):
    for p in json.loads(f.read_text())["phases"]:
        g = p.get("content_gap") or {}
        print(f"{f.parent.name[:22]:22s} {p['name'][:18]:18s} step {p['step']:4d} {p['seconds']:6.1f} s "
              f"synth {p.get('synthesis_split')} count TV {g.get('count_tv')} W1 {g.get('position_w1')}")
PY
  cat "$OUTDIR/table_${SRC}.md"
  ;;
esac
