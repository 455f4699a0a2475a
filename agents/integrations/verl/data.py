"""The prompt rows verl's dataset reads for MedVR, and how a row selects its env sample (verl-free).

verl's ``RLHFDataset`` needs a parquet file with a chat ``prompt`` column; the MedVR agent loop ignores that prompt
(it renders its own from the env: system prompt from the enabled tools, the image, the question) and resets each
trajectory's env to the row's sample instead. A row::

    {"data_source": "medvr/MedVR-VQA-Text-v0", "agent_name": "medvr",
     "prompt": [{"role": "user", "content": "<question text, for verl's length filter and logs>"}],
     "reward_model": {"style": "rule", "ground_truth": "<answer>"},
     "extra_info": {"index": 17, "sample_id": "...", "medvr_reset": {"options": {"index": 17}}}}

Write one with ``python -m agents.integrations.verl.data --env MedVR-VQA-Text-v0 --split train --out train.parquet``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

AGENT_NAME = "medvr"


def reset_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The env ``reset`` arguments (``{"seed": ..., "options": {...}}``) of a dataset row (verl's agent-loop kwargs).

    ``extra_info.medvr_reset`` wins; else ``extra_info.index``; else the row's ``index``.
    """
    extra = row.get("extra_info") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    if extra.get("medvr_reset") is not None:
        reset = dict(extra["medvr_reset"])
        unknown = set(reset) - {"seed", "options"}
        if unknown:
            raise ValueError(f"extra_info.medvr_reset takes 'seed' and 'options', got {sorted(unknown)}")
        return reset
    for index in (extra.get("index"), row.get("index")):
        if index is not None:
            return {"options": {"index": int(index)}}
    raise ValueError("a MedVR row needs extra_info.medvr_reset or extra_info.index to select its env sample; write "
                     "the dataset with python -m agents.integrations.verl.data")


def build_rows(env_id: str, env_kwargs: Mapping[str, Any] | None = None, limit: int | None = None) -> list[dict]:
    """One row per sample of the env's dataset split (in dataset order)."""
    import gymnasium as gym

    import medvr_env  # noqa: F401 - registers the env ids

    env = gym.make(env_id, **dict(env_kwargs or {}))
    dataset = env.unwrapped.dataset
    n = len(dataset) if limit is None else min(limit, len(dataset))
    rows = []
    for i in range(n):
        sample = dataset[i]
        rows.append({
            "data_source": f"medvr/{env_id}",
            "agent_name": AGENT_NAME,
            "prompt": [{"role": "user", "content": sample.question}],
            "reward_model": {"style": "rule", "ground_truth": sample.answer},
            "extra_info": {"index": i, "sample_id": sample.sample_id, "medvr_reset": {"options": {"index": i}}},
        })
    env.close()
    return rows


def write_parquet(rows: Sequence[dict], path: str) -> None:
    """Write ``rows`` atomically (a temporary file, then a rename)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = f"{path}.tmp"
    pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="MedVR-VQA-Text-v0", help="a registered MedVR env id")
    parser.add_argument("--env-kwargs", default="{}", help='JSON kwargs for gym.make, e.g. \'{"split": "train"}\'')
    parser.add_argument("--split", default=None, help="shortcut for env kwargs split")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    parser.add_argument("--out", required=True, help="output .parquet path")
    args = parser.parse_args(argv)
    kwargs = json.loads(args.env_kwargs)
    if args.split:
        kwargs["split"] = args.split
    rows = build_rows(args.env, kwargs, args.limit)
    write_parquet(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["AGENT_NAME", "build_rows", "reset_from_row", "write_parquet"]
