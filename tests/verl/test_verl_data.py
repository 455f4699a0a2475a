"""The prompt parquet: one row per env sample that verl's own RLHFDataset reads, and rows select their sample."""

from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="runs in the verl venv (.ci-venv-verl, built by .ci/run)")
pytest.importorskip("transfer_queue")

from agents.integrations.verl.data import build_rows, main, reset_from_row
from tests.verl.fakes import compose_config, cpu_overrides, pil_processor


def test_rows_select_their_sample():
    assert reset_from_row({"extra_info": {"medvr_reset": {"seed": 3, "options": {"index": 2}}}}) == {
        "seed": 3, "options": {"index": 2}}
    assert reset_from_row({"extra_info": {"index": 5}}) == {"options": {"index": 5}}
    assert reset_from_row({"index": 7, "extra_info": None}) == {"options": {"index": 7}}
    with pytest.raises(ValueError, match="extra_info.index"):
        reset_from_row({"extra_info": {}})
    with pytest.raises(ValueError, match="'seed' and 'options'"):
        reset_from_row({"extra_info": {"medvr_reset": {"index": 1}}})


def test_verls_dataset_reads_the_parquet(tmp_path, tiny_qwen):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    path = tmp_path / "train.parquet"
    assert main(["--env", "MedVR-VQA-Text-v0", "--limit", "3", "--out", str(path)]) == 0
    rows = build_rows("MedVR-VQA-Text-v0", {}, limit=3)
    config = compose_config(cpu_overrides(tiny_qwen))
    processor = pil_processor(tiny_qwen)
    dataset = RLHFDataset(str(path), processor.tokenizer, config.data, processor=processor)
    assert len(dataset) == 3
    for i in range(3):
        item = dataset[i]
        assert item["agent_name"] == "medvr" and reset_from_row(item) == {"options": {"index": i}}
        assert item["raw_prompt"][0]["content"] == rows[i]["prompt"][0]["content"]
