#!/usr/bin/env bash
# Pretrain one ResNet backbone; writes RUN/backbone.safetensors, RUN being --out, the run folder
# (default runs/pretrain/<name>; see pretrain/train.py).
#
#   bash tools/pretrain.sh --method simclr --steps 50            # embedded default, CPU or 1 GPU
#   bash tools/pretrain.sh --method simclr --out runs/pretrain/simclr-a   # --out: the run folder
#   bash tools/pretrain.sh --method byol --data coco=/data/coco --arch resnet50 --gpus 8
#   bash tools/pretrain.sh --gpus 8 --nnodes 2 --node-rank 0 --master-addr HOST ... # multi-node
#   bash tools/pretrain.sh --help                                  # every training flag
#
# Launcher flags (consumed here): --gpus N, --nnodes N, --node-rank R, --master-addr HOST,
# --master-port PORT. With --gpus > 1 or --nnodes the run goes through torchrun (one process per
# GPU); every other flag is passed to `python -m pretrain.train`. Uses the project's .venv
# (built by tools/bootstrap.sh when missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
  bash "$ROOT/tools/bootstrap.sh"
fi
PY="$ROOT/.venv/bin/python"

gpus=1 nnodes="" node_rank=0 master_addr=127.0.0.1 master_port=29500
args=()
need() { [[ $# -ge 2 && -n "$2" ]] || { echo "pretrain.sh: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpus) need "$@"; gpus="$2"; shift 2 ;;
    --nnodes) need "$@"; nnodes="$2"; shift 2 ;;
    --node-rank) need "$@"; node_rank="$2"; shift 2 ;;
    --master-addr) need "$@"; master_addr="$2"; shift 2 ;;
    --master-port) need "$@"; master_port="$2"; shift 2 ;;
    -h|--help)
      sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      echo
      cd "$ROOT" && exec "$PY" -m pretrain.train --help ;;
    *) args+=("$1"); shift ;;
  esac
done
if ! [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then
  echo "pretrain.sh: --gpus must be a positive integer, got '$gpus'" >&2; exit 2
fi

cd "$ROOT"
if [[ "$gpus" -gt 1 || -n "$nnodes" ]]; then
  exec "$ROOT/.venv/bin/torchrun" --nproc_per_node "$gpus" --nnodes "${nnodes:-1}" \
    --node_rank "$node_rank" --master_addr "$master_addr" --master_port "$master_port" \
    -m pretrain.train "${args[@]}"
fi
exec "$PY" -m pretrain.train "${args[@]}"
