#!/usr/bin/env bash
# MedVR GRPO (EVR + CCA) on verl 0.9.1: Qwen2.5-VL-7B-Instruct, one node of 8 GPUs.
# Needs: pip install -e ".[verl]" plus vLLM (verl's extra: pip install "verl[vllm]==0.9.1") on a GPU machine.
# Environment: MODEL (checkpoint folder), DATA (where the prompt parquet files go), ENV_ID (a MedVR env with a
# train and a test split), MEDVR_DATA (dataset root). Extra arguments are Hydra overrides, e.g. trainer.n_gpus_per_node=4.
set -euo pipefail
cd "$(dirname "$0")/../.."

MODEL=${MODEL:-/models/Qwen2.5-VL-7B-Instruct}
DATA=${DATA:-data/medvr}
ENV_ID=${ENV_ID:-MedVR-VQA-RAD-v0}

mkdir -p "$DATA"
[ -f "$DATA/train.parquet" ] || python -m agents.integrations.verl.data --env "$ENV_ID" --split train --out "$DATA/train.parquet"
[ -f "$DATA/val.parquet" ] || python -m agents.integrations.verl.data --env "$ENV_ID" --split test --limit 256 --out "$DATA/val.parquet"

python -m agents.integrations.verl.main --config-path "$PWD/examples/verl" --config-name medvr_qwen25vl_7b \
  actor_rollout_ref.model.path="$MODEL" \
  data.train_files="$DATA/train.parquet" data.val_files="$DATA/val.parquet" \
  medvr.env.id="$ENV_ID" \
  "$@"
