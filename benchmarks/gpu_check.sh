#!/usr/bin/env bash
# The GPU checks of the project as one prepared script (about 10 minutes on one H100/H200): training
# throughput (engine with device- and host-resident data vs PIL DataLoader vs model only), loss and
# metric timings, a short real paper-profile run in bf16, then the CUDA-only paths that CI cannot run:
# host-streamed data (pinned buffers), torch.compile, and the image-folder cache + loaders on CUDA. Run it from the repository root on a CUDA machine that has torch,
# torchvision, numpy, scipy, scikit-learn and pyyaml (the book stack is not needed):
#
#     mkdir -p .gpu && cp ../shared/data/{cifar10_jpeg.npz,make_cifar10.py,batches.meta} .gpu/   # offline data
#     OUT=gpu_results bash benchmarks/gpu_check.sh
#
# Without .gpu/, CIFAR-10 must already be in $DYSTRESS_DATA (default data/) or is downloaded.
set -euo pipefail
OUT=${OUT:-gpu_results}
DATA=${DYSTRESS_DATA:-data}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -f .gpu/make_cifar10.py ]; then python .gpu/make_cifar10.py "$DATA"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
python benchmarks/throughput.py --device cuda --backbone resnet18 --batch-size 512 --data-root "$DATA" \
    | tee "$OUT/throughput.md"
python benchmarks/loss_bench.py --device cuda | tee "$OUT/loss_bench.md"
python benchmarks/metrics_bench.py --device cuda --sizes 10000 50000 | tee "$OUT/metrics_bench.md"
# A short real run of the paper profile (ResNet-18, full CIFAR-10, bf16): 3 epochs, last-epoch kNN.
python -m dystress.cli pretrain --profile paper --set epochs=3 --set "data_root=$DATA" \
    --set linear_probe=false --run-dir "$OUT/paper_3ep"
cp "$OUT/paper_3ep/final_metrics.json" "$OUT/paper_3ep_final_metrics.json"
# CUDA-only paths, each short: host-streamed training data (pinned staging, non_blocking copies) ...
python -m dystress.cli pretrain --profile paper --set epochs=1 --set data_placement=host --set "data_root=$DATA" \
    --set linear_probe=false --set "snapshot_epochs=[]" --run-dir "$OUT/paper_1ep_host" --no-progress
# ... torch.compile (2 epochs: the second shows the compiled speed in records.jsonl) ...
python -m dystress.cli pretrain --profile paper --set epochs=2 --set compile=true --set "data_root=$DATA" \
    --set linear_probe=false --set "snapshot_epochs=[]" --run-dir "$OUT/paper_2ep_compile" --no-progress
for run in paper_3ep paper_1ep_host paper_2ep_compile; do
    echo "$run: $(tail -n 1 "$OUT/$run/records.jsonl")"
done | tee "$OUT/runs_summary.txt"
# ... HostBatchLoader's pinned double buffer under a busy GPU (exit 1 if a batch differs) ...
python benchmarks/host_loader_check.py | tee "$OUT/host_loader_check.txt"
# ... and image folders: parallel decode into the cache, host vs device loaders on CUDA (same batches).
python benchmarks/imagefolder_bench.py --device cuda --n 10000 --workers 16 --compute-ms 50 \
    | tee "$OUT/imagefolder_bench.md"
