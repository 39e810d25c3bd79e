#!/usr/bin/env bash
# The study's GPU work in one command on one CUDA machine, ending by a deadline (DEADLINE_S, default
# 480 s), with every result written to $OUT as it comes (up to ten files, the log steps.log):
#
#   1. throughput   the engine alone (engine vs model-only, the paper model at batch 128, the model alone
#                   at batch 512 too, which tells whether kernel launches bound the step; eager, and at
#                   the end torch.compile $THROUGHPUT_COMPILE, default reduce-overhead = CUDA graphs,
#                   up to COMPILE_S seconds (default 150) past the deadline, then $COMPILED_COUNTS
#                   (default none; e.g. 1,2,4,6: about a minute of compiling each) compiled processes
#                   side by side, each count's row as it ends -> throughput_compiled.json), then
#                   1, 2, 4 and 8 eager engine processes side by side ($COUNTS; none skips them):
#                   aggregate pairs/s                                      -> throughput.md, .json
#                   after the runs, the engine's whole step captured in one CUDA graph (a benchmark at a
#                   fixed learning rate; GRAPH=none skips it), alone beside the eager engine and
#                   $GRAPH_COUNTS (default none; e.g. 1,6) side by side  -> throughput_graph.md, .json
#   2. long         the `long` profile's 21 runs (`study run --engine cli`, $LONG_PARALLEL at a time) and
#                   their compact bundles (`study export`; LONG_PROFILE=none skips them)
#                                                                          -> long.tar.gz (results/long/)
#   3. headline     SimCLR (tau 0.2) vs DySTreSS (0.07, 0.2), three seeds, the paper configuration side
#                   by side beside the long runs; its epochs (HEADLINE_EPOCHS, default: sized from step
#                   1 to end before the deadline; HEADLINE_EPOCHS is needed with COUNTS=none); with
#                   HEADLINE_COMPILE=reduce-overhead (a torch.compile mode; default none) the runs
#                   compile their model
#                                                                          -> headline.json (benchmarks/headline.py)
#
#     OUT=gpu_out bash benchmarks/gpu_study.sh
#
# Data: CIFAR-10 in $DYSTRESS_DATA (default data/); when missing, $OFFLINE_CIFAR10 (a script writing the
# official layout into the folder it is given) writes it, else the runs download it. Needs torch,
# torchvision, numpy, scipy, scikit-learn, pandas and pyyaml ($PYTHON, default python3); not the book's
# tools. CPU dry run (seconds): THROUGHPUT_COMPILE=none GRAPH=none LONG_PROFILE=smoke THROUGHPUT_ARGS="--device cpu
# --backbone small_cnn --steps 2 --warmup 1" COUNTS=1,2 HEADLINE_EPOCHS=1 HEADLINE_EXTRA="--seeds 0 --set
# device=cpu --set backbone=small_cnn --set train_subset=512 --set test_subset=500 --set monitor_size=200"
# (tests/test_benchmarks.py).
set -uo pipefail
OUT=${OUT:-gpu_out}
DATA=${DYSTRESS_DATA:-data}
PY=${PYTHON:-python3}
DEADLINE=${DEADLINE_S:-480}
LONG_PROFILE=${LONG_PROFILE:-long}
LONG_PARALLEL=${LONG_PARALLEL:-6}
COUNTS=${COUNTS:-1,2,4,8}
COMPILED_COUNTS=${COMPILED_COUNTS:-none}
HEADLINE_COMPILE=${HEADLINE_COMPILE:-none}
COMPILE_S=${COMPILE_S:-150}
GRAPH=${GRAPH:-on}
GRAPH_COUNTS=${GRAPH_COUNTS:-none}
THROUGHPUT_ARGS=${THROUGHPUT_ARGS:---device cuda --backbone resnet18 --steps 30 --warmup 10}
WORK=${WORK:-$(mktemp -d)}  # run folders (checkpoints, snapshots): never under $OUT
if [ "$COUNTS" = none ] && [ -z "${HEADLINE_EPOCHS:-}" ]; then
    echo "gpu_study.sh: COUNTS=none measures no side-by-side rate to size the headline with: give HEADLINE_EPOCHS" >&2
    exit 2
fi
mkdir -p "$OUT" "$WORK"
# this command's files only: none left from an earlier command in the same $OUT
rm -f "$OUT"/{steps.log,throughput.md,throughput.json,throughput_compiled.json,throughput_graph.md,throughput_graph.json,headline.json,headline.log,long.log,long.tar.gz}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 DYSTRESS_DATA="$DATA"
log() { echo "[gpu_study ${SECONDS}s] $*" | tee -a "$OUT/steps.log"; }
left() { echo $((DEADLINE - SECONDS)); }

if [ -n "${OFFLINE_CIFAR10:-}" ] && [ ! -d "$DATA/cifar-10-batches-py" ]; then "$PY" "$OFFLINE_CIFAR10" "$DATA"; fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__)"
  nproc; } 2>&1 | tee -a "$OUT/steps.log"

log "throughput: engine vs model alone, batch 128"
# shellcheck disable=SC2086  # THROUGHPUT_ARGS is a list of words
timeout 90 "$PY" benchmarks/throughput.py $THROUGHPUT_ARGS --batch-size 128 --data-root "$DATA" \
    --modes engine,model 2>&1 | tee "$OUT/throughput.md"
log "throughput: model alone, batch 512 (a step about as long as at 128 pairs: bound by kernel launches)"
# shellcheck disable=SC2086
timeout 60 "$PY" benchmarks/throughput.py $THROUGHPUT_ARGS --batch-size 512 --data-root "$DATA" \
    --modes model 2>&1 | tee -a "$OUT/throughput.md"
if [ "$COUNTS" != none ]; then
    log "throughput: $COUNTS runs side by side"
    # shellcheck disable=SC2086
    timeout 200 "$PY" benchmarks/throughput.py $THROUGHPUT_ARGS --batch-size 128 --data-root "$DATA" \
        --concurrent "$COUNTS" --rows-json "$OUT/throughput.json" 2>&1 | tee -a "$OUT/throughput.md"
fi

LONG_PID=
if [ "$LONG_PROFILE" != none ]; then
    log "long: study run --profile $LONG_PROFILE --parallel $LONG_PARALLEL (background)"
    timeout "$(( $(left) > 80 ? $(left) - 20 : 60 ))" "$PY" -m dystress.cli study run --profile "$LONG_PROFILE" \
        --engine cli --parallel "$LONG_PARALLEL" --runs "$WORK/runs" >"$OUT/long.log" 2>&1 &
    LONG_PID=$!
fi

EPOCHS=${HEADLINE_EPOCHS:-}
if [ -z "$EPOCHS" ]; then
    # the epochs six runs fit into the time left less 150 s (start-up, the monitor, the final evaluation
    # and the linear probe) at the aggregate measured for 4 and 8 runs (their mean; else the largest
    # measured), of which the headline gets half beside the long study and all of it alone (on one H200
    # the first try, at 60 % and 90 s, ended its 8th epoch at the deadline)
    SHARE=$([ -n "$LONG_PID" ] && echo 0.5 || echo 1.0)
    EPOCHS=$("$PY" -c "
import json, sys
sys.path.insert(0, 'benchmarks')
from headline import epochs_to_fit
rows = {r['runs']: r['aggregate_pairs_per_s'] for r in json.load(open('$OUT/throughput.json'))}
wide = [rows[n] for n in (4, 8) if n in rows] or [max(rows.values())]
agg = sum(wide) / len(wide)
print(min(200, epochs_to_fit(max(0.5, ($(left) - 150) / 60), $SHARE * agg, 6)))" || echo 10)
fi
log "headline: $EPOCHS epochs, until $((DEADLINE - 25)) s"
COMPILED_HEADLINE=
[ "$HEADLINE_COMPILE" != none ] && COMPILED_HEADLINE="--set compile=true --set compile_mode=$HEADLINE_COMPILE"
# shellcheck disable=SC2086  # COMPILED_HEADLINE and HEADLINE_EXTRA are lists of words
"$PY" benchmarks/headline.py --out "$WORK/headline" --epochs "$EPOCHS" --deadline-s "$(( $(left) > 45 ? $(left) - 25 : 20 ))" \
    $COMPILED_HEADLINE ${HEADLINE_EXTRA:-} 2>&1 | tee "$OUT/headline.log"
cp "$WORK/headline/headline.json" "$OUT/headline.json" 2>/dev/null

if [ -n "$LONG_PID" ]; then
    log "long: waiting for the study (until the deadline)"
    wait "$LONG_PID"
    log "long: study exited $?"
    "$PY" -m dystress.cli study export --profile "$LONG_PROFILE" --parallel "$LONG_PARALLEL" --runs "$WORK/runs" \
        --out "$WORK/results/$LONG_PROFILE" 2>&1 | tee -a "$OUT/long.log"
    tar -czf "$OUT/long.tar.gz" -C "$WORK" "results/$LONG_PROFILE" 2>/dev/null
fi
# the whole step in one CUDA graph after the runs (a benchmark: its failure must not cost them), in a
# file of its own
# (like the compile step, up to COMPILE_S seconds past the deadline, at most 90 s alone and 150 s side by side)
grace() { local t=$(( $(left) + COMPILE_S )); echo $(( t < $1 ? t : $1 )); }
if [ "$GRAPH" != none ] && [ "$(grace 90)" -gt 30 ]; then
    log "throughput: the engine step in one CUDA graph, batch 128 (the step without Python and launches)"
    # shellcheck disable=SC2086
    timeout "$(grace 90)" "$PY" benchmarks/throughput.py $THROUGHPUT_ARGS --batch-size 128 --data-root "$DATA" \
        --modes engine,graph 2>&1 | tee "$OUT/throughput_graph.md"
    if [ "$GRAPH_COUNTS" != none ] && [ "$(grace 150)" -gt 30 ]; then
        log "throughput: $GRAPH_COUNTS graphed runs side by side"
        # shellcheck disable=SC2086
        timeout "$(grace 150)" "$PY" benchmarks/throughput.py $THROUGHPUT_ARGS --batch-size 128 --data-root "$DATA" \
            --concurrent "$GRAPH_COUNTS" --concurrent-mode graph --rows-json "$OUT/throughput_graph.json" \
            2>&1 | tee -a "$OUT/throughput_graph.md"
    fi
fi
# torch.compile last: its first compile takes a minute or more, and it must not eat the runs' time
if [ "${THROUGHPUT_COMPILE:-reduce-overhead}" != none ] && [ "$(( $(left) + COMPILE_S ))" -gt 60 ]; then
    log "throughput: engine vs model alone, torch.compile ${THROUGHPUT_COMPILE:-reduce-overhead}"
    # shellcheck disable=SC2086
    timeout "$(($(left) + COMPILE_S))" "$PY" benchmarks/throughput.py $THROUGHPUT_ARGS --batch-size 128 --data-root "$DATA" \
        --modes engine,model --compile "${THROUGHPUT_COMPILE:-reduce-overhead}" 2>&1 | tee -a "$OUT/throughput.md"
    if [ "$COMPILED_COUNTS" != none ]; then
        log "throughput: $COMPILED_COUNTS compiled runs side by side"
        # shellcheck disable=SC2086
        timeout "$(( $(left) + COMPILE_S > 30 ? $(left) + COMPILE_S : 30 ))" "$PY" benchmarks/throughput.py \
            $THROUGHPUT_ARGS --batch-size 128 --data-root "$DATA" --compile "${THROUGHPUT_COMPILE:-reduce-overhead}" \
            --concurrent "$COMPILED_COUNTS" --rows-json "$OUT/throughput_compiled.json" 2>&1 | tee -a "$OUT/throughput.md"
    fi
fi
log "done"
ls -la "$OUT"
