#!/usr/bin/env bash
# The GPU checks, for a lent GPU machine (CI never needs one; see README "GPU figures").
# NCCL DDP, bf16-mixed and 16-mixed on one GPU, with throughput against a hand-written loop
# and PyTorch Lightning (installed on the machine), with lightjob serving its Prometheus
# metrics as under the operator (CUDA memory gauges printed at the end). Under 5 minutes.
#
#   bash benchmarks/gpu_check.sh            # prints the table; copy it into the README
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torch.distributed as d; print('torch', torch.__version__, 'nccl', d.is_nccl_available(), torch.cuda.nccl.version())"
timeout 270 python3 benchmarks/gpu_throughput.py --steps "${STEPS:-300}" --repeats "${REPEATS:-2}"
