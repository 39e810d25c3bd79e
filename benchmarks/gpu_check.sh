#!/usr/bin/env bash
# The GPU checks of the project as one prepared script, in two stages that each fit a 10-minute call
# (about 4 + 5 minutes on one H100/H200, plus the first compile and data setup):
#
#   core   training throughput (engine with device- and host-resident data vs PIL DataLoader vs
#          model only, ResNet-18 / CIFAR-10, batch 512; views forwarded separately, then jointly) and a
#          short real paper-profile run in bf16
#   paths  loss and metric timings, then the CUDA-only paths that CI cannot run: host-streamed data
#          (pinned buffers), torch.compile, HostBatchLoader under a busy GPU, image-folder cache +
#          loaders on CUDA
#
# Run from the repository root on a CUDA machine with torch, torchvision, numpy, scipy, scikit-learn
# and pyyaml (the book stack is not needed), with $PYTHON (default python3) the interpreter that has them:
#
#     OUT=gpu_results bash benchmarks/gpu_check.sh core
#     OUT=gpu_results bash benchmarks/gpu_check.sh paths      # or: all (the default), both in turn
#
# Data: CIFAR-10 in $DYSTRESS_DATA (default data/, as `make data` leaves it); when it is not there,
# $OFFLINE_CIFAR10 (a script that writes the official layout into the folder it is given, for a
# machine without network) writes it, else it is downloaded. Every
# step runs under its own time limit (STEP_LIMIT_S, default 300 s) and a failed or timed-out step does
# not stop the others; each writes its output to $OUT as it goes, and $OUT/steps.tsv lists every step
# with its exit status and seconds. The script exits 1 when any step failed. A dry run of the
# training steps on the CPU: PAPER_EXTRA="--set device=cpu --set backbone=small_cnn --set train_subset=512
# --set test_subset=500 --set monitor_size=200" (extra overrides of every paper-profile run).
set -uo pipefail
STAGE=${1:-all}
case "$STAGE" in all | core | paths) ;; *)
    echo "usage: gpu_check.sh [all|core|paths] (got '$STAGE')" >&2
    exit 2
    ;;
esac
OUT=${OUT:-gpu_results}
DATA=${DYSTRESS_DATA:-data}
LIMIT=${STEP_LIMIT_S:-300}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PY
FAILED=0

# step NAME OUTFILE CMD...: run CMD (a command or an exported function) under the time limit, tee its output to $OUT/OUTFILE, record it.
step() {
    local name=$1 out=$2
    shift 2
    local start=$SECONDS rc
    echo "== $name"
    timeout --kill-after=10 "$LIMIT" bash -c '"$@"' step "$@" 2>&1 | tee "$OUT/$out"
    rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%ss\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$OUT/steps.tsv"
    if [ "$rc" != 0 ]; then FAILED=1; fi
}

paper() { # paper RUN_DIR OVERRIDES...: a short paper-profile run on $DATA, no probe (+ $PAPER_EXTRA)
    local dir=$1
    shift
    # shellcheck disable=SC2086  # PAPER_EXTRA is a list of words: --set k=v ...
    "$PY" -m dystress.cli pretrain --profile paper --set "data_root=$DATA" --set linear_probe=false \
        --run-dir "$OUT/$dir" --no-progress "$@" ${PAPER_EXTRA:-}
}

setup() {
    if [ -n "${OFFLINE_CIFAR10:-}" ] && [ ! -d "$DATA/cifar-10-batches-py" ]; then "$PY" "$OFFLINE_CIFAR10" "$DATA"; fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv &&
        "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda,
            'torchvision', torchvision.__version__)"
}

export -f paper setup
export OUT DATA OFFLINE_CIFAR10=${OFFLINE_CIFAR10:-}
step setup gpu.txt setup
if [ "$STAGE" != paths ]; then
    step throughput throughput.md "$PY" benchmarks/throughput.py --device cuda --backbone resnet18 \
        --batch-size 512 --data-root "$DATA"
    step throughput_joint throughput_joint.md "$PY" benchmarks/throughput.py --device cuda --backbone resnet18 \
        --batch-size 512 --data-root "$DATA" --modes engine,model --view-forward joint
    # A short real run of the paper profile (ResNet-18, full CIFAR-10, bf16): 3 epochs, last-epoch kNN.
    step paper_3ep paper_3ep.log paper paper_3ep --set epochs=3 --set "snapshot_epochs=[0,3]"
fi
if [ "$STAGE" != core ]; then
    step loss_bench loss_bench.md "$PY" benchmarks/loss_bench.py --device cuda
    step metrics_bench metrics_bench.md "$PY" benchmarks/metrics_bench.py --device cuda --sizes 10000 50000
    # Host-streamed training data (pinned staging, non_blocking copies) ...
    step paper_1ep_host paper_1ep_host.log paper paper_1ep_host --set epochs=1 --set data_placement=host \
        --set "snapshot_epochs=[]"
    # ... torch.compile (2 epochs: the second shows the compiled speed in records.jsonl) ...
    step paper_2ep_compile paper_2ep_compile.log paper paper_2ep_compile --set epochs=2 --set compile=true \
        --set "snapshot_epochs=[]"
    # ... HostBatchLoader's pinned double buffer under a busy GPU (exit 1 if a batch differs) ...
    step host_loader_check host_loader_check.txt "$PY" benchmarks/host_loader_check.py
    # ... and image folders: parallel decode into the cache, host vs device loaders on CUDA (same batches).
    step imagefolder_bench imagefolder_bench.md "$PY" benchmarks/imagefolder_bench.py --device cuda \
        --n 10000 --workers 16 --compute-ms 50
fi
for run in paper_3ep paper_1ep_host paper_2ep_compile; do
    if [ -f "$OUT/$run/records.jsonl" ]; then echo "$run: $(tail -n 1 "$OUT/$run/records.jsonl")"; fi
    if [ -f "$OUT/$run/final_metrics.json" ]; then cp "$OUT/$run/final_metrics.json" "$OUT/${run}_final_metrics.json"; fi
done | tee -a "$OUT/runs_summary.txt"
echo "== steps (name, exit status, seconds)"
cat "$OUT/steps.tsv"
exit "$FAILED"
