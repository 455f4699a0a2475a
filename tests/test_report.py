"""The HTML trajectory report (agents.report): what it reads, what it embeds, and how it behaves in a real browser.

Runs are played here with the real env and explicit actions, so every box, answer and
error in the records is known. The browser tests drive Debian's headless Chromium over
the DevTools protocol (agents.report.browser); they skip only when Chromium or
websocket-client is missing, and say which.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import medvr_env  # noqa: F401
from agents.credit import consensus_credit
from agents.metrics import EpisodeStats, MetricTally
from agents.report import ReportInputError, ReportOptions, build_report
from agents.report.browser import Browser, unavailable_reason
from agents.report.episodes import text_segments
from agents.report.records import episode_from_record, read_metrics
from agents.runner import TrajectoryWriter, write_json
from medvr_env.render import view_box_colour

ENV_ID = "MedVR-VQA-v0"
ZOOMS = ([0.05, 0.1, 0.55, 0.6], [0.4, 0.3, 0.95, 0.9], [0.2, 0.5, 0.7, 0.95])


def _zoom(box, entropy=None, think="look closer"):
    call = json.dumps({"name": "zoom", "arguments": {"bbox_2d": box}})
    action = {"text": f"<think>{think}</think><tool_call>{call}</tool_call>"}
    if entropy is not None:
        action["entropy"] = entropy
    return action


def _answer(text, entropy=None):
    action = {"text": f"<think>decide</think><answer>{text}</answer>"}
    if entropy is not None:
        action["entropy"] = entropy
    return action


def play(env, index: int, *, zooms: int, correct: bool, invalid: bool = False, boxes=ZOOMS) -> dict:
    """One episode of sample ``index``: ``zooms`` zooms, optionally an invalid action, then a right or wrong answer."""
    env.reset(seed=index, options={"index": index})
    sample = env.unwrapped.episode.sample
    for k in range(zooms):
        env.step(_zoom(boxes[k % len(boxes)], entropy=0.8 - 0.1 * k))
    if invalid:
        env.step({"text": "no tags here"})
    answer = sample.answer if correct else "definitely not " + sample.answer
    env.step(_answer(answer, entropy=0.3))
    return env.unwrapped.episode.to_dict()


def write_run(folder: Path, records: list[dict], agent: str = "test-agent") -> Path:
    """A run folder laid out like `medvr run`'s: trajectories.jsonl and summary.json."""
    writer = TrajectoryWriter(folder / "trajectories.jsonl")
    for record in records:
        writer.write(record)
    writer.close(complete=True)
    write_json(folder / "summary.json", {"env": ENV_ID, "agent": agent, "seed": 0, "env_kwargs": {}})
    return folder


@pytest.fixture(scope="module")
def env():
    env = gym.make(ENV_ID)
    yield env
    env.close()


@pytest.fixture(scope="module")
def records(env):
    """12 episodes: zoom counts 0-3, every third wrong, one with an invalid action, one with hostile text."""
    out = [play(env, i, zooms=i % 4, correct=i % 3 != 2, invalid=i == 5) for i in range(12)]
    # text from a dataset or a model is shown as text: this must neither end a script block nor run
    out[11]["sample"]["question"] += " </script><img src=x onerror=\"console.error('injected')\"><!--"
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, records):
    return write_run(tmp_path_factory.mktemp("run_a"), records)


@pytest.fixture(scope="module")
def report(run_dir):
    return build_report(run_dir, options=ReportOptions(page_size=5))


def blocks(html: str) -> dict[str, str]:
    """Every ``<script type=... id=...>`` block of a report, by id."""
    return dict(re.findall(r'<script type="[^"]+" id="([^"]+)">(.*?)</script>', html, flags=re.DOTALL))


def index_of(html: str) -> dict:
    return json.loads(blocks(html)["index"])


# ---------------------------------------------------------------------------------------------- content


def test_report_is_self_contained_and_embeds_every_episode(report, records):
    html = report.path.read_text(encoding="utf-8")
    assert report.path.name == "report.html" and report.episodes_total == report.episodes_shown == len(records)
    assert not re.search(r'(src|href)="(https?:)?//', html), "the report must not fetch anything"
    assert "<link" not in html and "<script src" not in html
    found = blocks(html)
    index = index_of(html)
    assert len(index["episodes"]) == len(records)
    for number, record in enumerate(records):
        entry = index["episodes"][number]
        assert entry["boxes"] == [[*v["box"], v["index"]] for v in record["views"][1:]]
        assert entry["correct"] == bool(record["grade"]["correct"])
        assert found[f"im-{entry['img']}"].startswith("data:image/jpeg;base64,")
        detail = json.loads(found[f"ep-{number}"])
        assert len(detail["views"]) == len(record["views"]) and all(v["uri"] for v in detail["views"])
        assert [s["step"] for s in detail["steps"]] == [s["step"] for s in record["steps"]]
    # the invalid action of episode 5 shows its error code
    errors = [s["error"] for s in json.loads(found["ep-5"])["steps"] if s["error"]]
    assert errors and errors[0]["code"] == records[5]["steps"][-2]["error"]["code"]


def test_summary_uses_the_same_numbers_as_medvr_eval(report, records):
    html = report.path.read_text(encoding="utf-8")
    tally = MetricTally.of(EpisodeStats.from_record(r) for r in records)
    row = re.search(r"<th>accuracy \(%\)</th><td>([0-9.]+)</td>", html)
    assert row and float(row.group(1)) == round(100 * tally.accuracy, 1)
    zoom_rate = re.search(r"<th>zoom rate \(%\)</th><td>([0-9.]+)</td>", html)
    assert float(zoom_rate.group(1)) == round(100 * tally.tool_stats().zoom_rate, 1)
    for title in ("accuracy by question type", "zooms/crops per episode", "entropy before / after looking"):
        assert f'aria-label="{title}' in html


def test_size_grows_with_episodes_shown_not_with_the_run(tmp_path, records):
    small = write_run(tmp_path / "small", records)
    large = write_run(tmp_path / "large", records * 5)
    capped_small = build_report(small, out=tmp_path / "a.html", options=ReportOptions(max_episodes=3))
    capped_large = build_report(large, out=tmp_path / "b.html", options=ReportOptions(max_episodes=3))
    full_small = build_report(small, out=tmp_path / "c.html", options=ReportOptions(max_episodes=12))
    assert capped_large.episodes_total == 60 and capped_large.episodes_shown == 3
    assert abs(capped_large.size_bytes - capped_small.size_bytes) < 0.05 * capped_small.size_bytes
    assert full_small.size_bytes > 1.5 * capped_small.size_bytes
    assert "shows 3 of 60 episodes" in capped_large.path.read_text(encoding="utf-8")


def test_turn_text_is_cut_into_think_tool_call_and_answer():
    raw = '<think>upper left</think>\n<tool_call>{"name": "zoom"}</tool_call>'
    assert text_segments(raw, "zoom") == [["think", "<think>upper left</think>"], ["text", "\n"],
                                          ["tool_call", '<tool_call>{"name": "zoom"}</tool_call>']]
    assert text_segments('{"name": "answer", "arguments": {"text": "no"}}', "answer")[0][0] == "answer"
    assert text_segments("<think>unclosed", None) == [["think", "<think>unclosed"]]


def test_episode_rebuilt_from_its_record_draws_like_the_env(env, records):
    env.reset(seed=1, options={"index": 1})
    env.step(_zoom(ZOOMS[0]))
    live = env.unwrapped.episode
    rebuilt = episode_from_record(live.to_dict(), live.original)
    assert rebuilt.to_dict() == live.to_dict()
    from medvr_env.render import render_rgb

    assert np.array_equal(render_rgb(rebuilt), render_rgb(live))


def test_learning_curves_from_metrics_jsonl(tmp_path, records):
    run = write_run(tmp_path / "train", records[:2])
    lines = [{"step": s, "time": 1e9 + s, "loss": 1.0 / s, "medvr/zoom_rate": 0.1 * s} for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{\"step\": 6, \"lo")
    curves = read_metrics(run / "metrics.jsonl")
    assert set(curves) == {"loss", "medvr/zoom_rate"} and curves["loss"][0] == (1.0, 1.0) and len(curves["loss"]) == 5
    html = build_report(run).path.read_text(encoding="utf-8")
    assert 'aria-label="loss"' in html and 'aria-label="medvr/zoom_rate"' in html
    (run / "trajectories.jsonl").unlink()  # a training run that logged metrics only
    html = build_report(run).path.read_text(encoding="utf-8")
    assert 'aria-label="loss"' in html and "No trajectory records" in html


def test_unreadable_runs_are_clear_errors(tmp_path, records):
    with pytest.raises(ReportInputError, match="does not exist"):
        build_report(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportInputError, match="holds no trajectory file"):
        build_report(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "trajectories.jsonl").write_text(json.dumps(records[0]) + "\n{not json\n" + json.dumps(records[1]) + "\n")
    with pytest.raises(ReportInputError, match=r"trajectories.jsonl:2 is not JSON"):
        build_report(bad)
    (bad / "trajectories.jsonl").write_text(json.dumps({"sample": {}}) + "\n")
    with pytest.raises(ReportInputError, match=r"missing \['image_size', 'views', 'steps'\]"):
        build_report(bad)


def test_non_finite_numbers_in_records_become_null(tmp_path, records):
    record = json.loads(json.dumps(records[1]))
    record["steps"][0]["entropy"] = float("nan")
    html = build_report(write_run(tmp_path / "nan", [record])).path.read_text(encoding="utf-8")
    detail = json.loads(blocks(html)["ep-0"])
    assert detail["steps"][0]["entropy"] is None and "nan" not in detail["entropy_svg"].lower()


def test_interrupted_run_is_read_from_its_partial_file(tmp_path, records):
    run = tmp_path / "cut"
    run.mkdir()
    (run / "trajectories.jsonl.partial").write_text(
        "".join(json.dumps(r) + "\n" for r in records[:3]) + json.dumps(records[3])[:100])
    result = build_report(run)
    assert result.episodes_total == 3
    assert "the run was interrupted" in result.path.read_text(encoding="utf-8")


def test_missing_dataset_draws_stand_ins_and_says_why(tmp_path, records):
    run = write_run(tmp_path / "moved", records[:2])
    write_json(run / "summary.json", {"env": "MedVR-VQA-RAD-v0", "agent": "x",
                                      "env_kwargs": {"data_root": str(tmp_path / "gone")}})
    html = build_report(run).path.read_text(encoding="utf-8")
    assert "images drawn as grey stand-ins" in html and "--data-root" in html
    detail = json.loads(blocks(html)["ep-0"])
    assert detail["load_error"] and all(v["uri"] is None for v in detail["views"])
    # an image whose size is not the one the run saw is refused too (the boxes would not fit it)
    changed = json.loads(json.dumps(records[0]))
    changed["image_size"] = [changed["image_size"][0] + 1, changed["image_size"][1]]
    html = build_report(write_run(tmp_path / "changed", [changed])).path.read_text(encoding="utf-8")
    assert "the dataset changed?" in json.loads(blocks(html)["ep-0"])["load_error"]


# ---------------------------------------------------------------------------------------------- groups


@pytest.fixture(scope="module")
def group_records(env):
    """One EVR-style group on sample 3: two correct rollouts agree on a region, one looks elsewhere, one is wrong."""
    plans = [(ZOOMS[0], True, None, None), (ZOOMS[0], True, 0, 1), (ZOOMS[1], True, None, None),
             (ZOOMS[2], False, 2, 1)]
    out = []
    for k, (box, correct, parent, fork) in enumerate(plans):
        record = play(env, 3, zooms=1, correct=correct, boxes=(box,))
        record["group"] = {"id": "s3/round-0", "index": k, "parent": parent, "fork_step": fork,
                           "tool_reward": 0.25 * k}
        out.append(record)
    return out


def test_group_section_recomputes_the_consensus_with_agents_credit(tmp_path, group_records, records):
    run = write_run(tmp_path / "grpo", records[:2] + group_records)
    html = build_report(run).path.read_text(encoding="utf-8")
    group = json.loads(blocks(html)["grp-0"])
    credit = consensus_credit(group_records)
    assert [m["iou"] for m in group["members"]] == credit.ious
    assert [m["tool_reward"] for m in group["members"]] == credit.tool_rewards
    assert [m["rec_tool_reward"] for m in group["members"]] == [0.0, 0.25, 0.5, 0.75]
    assert [m["parent"] for m in group["members"]] == [None, 0, None, 2]
    assert [m["episode"] for m in group["members"]] == [2, 3, 4, 5]
    assert group["mask"].startswith("data:image/png;base64,")
    mask = np.array(Image.open(io.BytesIO(base64.b64decode(group["mask"].split(",", 1)[1]))))
    assert mask.shape[:2] == credit.consensus.shape and np.array_equal(mask[..., 3] > 0, credit.consensus)
    assert group["tree_svg"].count("<line") == 4  # one row per rollout
    assert "forked from #0 at step 1" in group["tree_svg"]


def test_group_field_accepts_evr_rollout_keys(tmp_path, group_records):
    evr_style = []
    for record in group_records:
        info = record["group"]
        parent = None if info["parent"] is None else [3, info["parent"]]
        evr_style.append(dict(record, group={"id": "s3", "index": [3, info["index"]], "parent": parent,
                                             "fork_turn": info["fork_step"], "fork_token": 5}))
    group = json.loads(blocks(build_report(write_run(tmp_path / "evr", evr_style)).path.read_text())["grp-0"])
    assert [(m["index"], m["parent"], m["fork_step"], m["fork_token"]) for m in group["members"]] == [
        (0, None, None, 5), (1, 0, 1, 5), (2, None, None, 5), (3, 2, 1, 5)]


def test_group_field_must_name_its_group(tmp_path, records):
    bad = dict(records[0], group={"index": 1})
    with pytest.raises(ReportInputError, match="must be an object with an 'id'"):
        build_report(write_run(tmp_path / "g", [bad]))


# ---------------------------------------------------------------------------------------------- two runs


@pytest.fixture(scope="module")
def compare_runs(tmp_path_factory, env, records):
    """Run B: the same 12 questions; episodes 0 and 1 flip right to wrong, 2 flips wrong to right, 7 stops zooming."""
    flipped = []
    for i, record in enumerate(records):
        if i in (0, 1, 2):
            flipped.append(play(env, i, zooms=i % 4, correct=not record["grade"]["correct"]))
        elif i == 7:
            flipped.append(play(env, i, zooms=0, correct=record["grade"]["correct"]))
        else:
            flipped.append(record)
    base = tmp_path_factory.mktemp("compare")
    return write_run(base / "A", records), write_run(base / "B", flipped, agent="other")


def test_two_runs_side_by_side_list_what_changed(compare_runs):
    a, b = compare_runs
    result = build_report(a, b, options=ReportOptions(max_episodes=8))
    assert result.path == a / "compare_B.html"
    html = result.path.read_text(encoding="utf-8")
    pairs = index_of(html)["compare"]["pairs"]
    changes = {p["sid"]: (p["change"], p["zoom"]) for p in pairs}
    assert len(pairs) == 4  # max_episodes 8 = 4 questions, the changed ones first
    assert sorted(c for c, _ in changes.values()) == sorted(["correct→wrong", "correct→wrong", "wrong→correct",
                                                             "both correct"])
    assert any(z == "zoomed in A only" for _, z in changes.values())
    counts = dict(re.findall(r"<tr><th>([^<]+)</th><td>(\d+)</td></tr>", html.split('id="change-counts"')[1]))
    assert counts["correct→wrong"] == "2" and counts["wrong→correct"] == "1" and counts["zooming changed"] == "1"


# ---------------------------------------------------------------------------------------------- CLI


def test_medvr_report_command_and_report_at_the_end_of_run(tmp_path, run_dir, capsys):
    from agents.cli import main

    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out), "--max-episodes", "2", "--no-progress"]) == 0
    assert out.is_file() and "2 of 12 episodes shown" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", "--agent", "random", "--episodes", "2", "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    assert main(["run", "--agent", "random", "--episodes", "1", "--out", str(tmp_path / "quiet"), "--no-progress",
                 "--no-report"]) == 0
    assert len(list((tmp_path / "runs").glob("*/report.html"))) == 1
    assert not list((tmp_path / "quiet").glob("*/report.html"))


# ---------------------------------------------------------------------------------------------- browser

BROWSER_MISSING = unavailable_reason()


@pytest.fixture(scope="module")
def browser():
    if BROWSER_MISSING:
        pytest.skip(f"headless browser checks need Chromium: {BROWSER_MISSING}")
    with Browser() as b:
        yield b


def _visible_ids(page) -> list[int]:
    return page.evaluate("[...document.querySelectorAll('#cards .card')].map(c => +c.dataset.id)")


def _select(page, name: str, value: str) -> None:
    page.evaluate(f"(() => {{ const s = document.getElementById('f-{name}'); s.value = {json.dumps(value)}; "
                  f"s.dispatchEvent(new Event('change')); }})()")


def test_report_opens_without_errors_and_filters_and_pages(browser, report, records):
    page = browser.open(report.path)
    assert page.evaluate("document.documentElement.dataset.ready") == "1"
    assert page.errors == []
    assert _visible_ids(page) == [0, 1, 2, 3, 4]
    assert page.evaluate("document.querySelector('#pager-top .pageinfo').textContent") == "page 1 of 3 · 12 episodes"
    page.evaluate("document.querySelector('#pager-top .next').click()")
    assert _visible_ids(page) == [5, 6, 7, 8, 9]
    page.evaluate("document.querySelector('#pager-top .last').click()")
    assert _visible_ids(page) == [10, 11]

    wrong = [i for i, r in enumerate(records) if not r["grade"]["correct"]]
    _select(page, "result", "wrong")
    assert _visible_ids(page) == wrong[:5]
    assert page.evaluate("window.medvrReport.filtered()") == wrong
    assert page.evaluate("[...document.querySelectorAll('#cards .card')].every(c => c.dataset.correct === '0')")
    _select(page, "result", "all")
    _select(page, "zoomed", "no")
    assert page.evaluate("window.medvrReport.filtered()") == [i for i in range(12) if i % 4 == 0]
    _select(page, "zoomed", "all")
    qtype = records[0]["sample"]["question_type"]
    _select(page, "qtype", qtype)
    assert page.evaluate("window.medvrReport.filtered()") == [
        i for i, r in enumerate(records) if r["sample"]["question_type"] == qtype]
    page.evaluate("new Promise(done => { addEventListener('hashchange', () => setTimeout(done, 0), {once: true}); "
                  "location.hash = '#ep-7'; })")  # a link to one episode opens it
    assert page.evaluate("[...document.querySelectorAll('#cards .detail')].map(d => +d.dataset.detail)") == [7]
    page.evaluate("new Promise(done => { addEventListener('hashchange', () => setTimeout(done, 0), {once: true}); "
                  "location.hash = '#ep-11'; })")
    assert page.evaluate("document.querySelector('.card[data-id=\"11\"] .q').textContent") == \
        records[11]["sample"]["question"]  # hostile text shown as text, nothing injected
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert page.errors == []
    page.close()


def test_screenshot_shows_each_box_where_the_record_says(browser, report, records):
    page = browser.open(report.path, width=1200, height=1000)
    number = 3  # three zooms
    page.evaluate(f"document.querySelector('.card[data-id=\"{number}\"] .head').click()")
    page.evaluate("document.querySelector('.detail').scrollIntoView()")
    rect = page.evaluate("(() => { const r = document.querySelector('.detail .fig.orig').getBoundingClientRect(); "
                         "return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; })()")
    assert page.evaluate("document.querySelectorAll('.detail .strip img').length") == len(records[number]["views"])
    shot = np.array(Image.open(io.BytesIO(page.screenshot(
        {"x": rect[0], "y": rect[1], "width": rect[2], "height": rect[3]}))).convert("RGB")).astype(int)
    width, height = records[number]["image_size"]
    scale_x, scale_y = shot.shape[1] / width, shot.shape[0] / height
    for view in records[number]["views"][1:]:
        x1, y1, x2, y2 = view["box"]
        colour = np.array(view_box_colour(view["index"]))
        # midpoints of the four sides, in screenshot pixels (clamped inside the image)
        points = [(x1, (y1 + y2) / 2), (x2, (y1 + y2) / 2), ((x1 + x2) / 2, y1), ((x1 + x2) / 2, y2)]
        for px, py in points:
            cx = min(shot.shape[1] - 2, max(1, round(px * scale_x)))
            cy = min(shot.shape[0] - 2, max(1, round(py * scale_y)))
            window = shot[max(0, cy - 2):cy + 3, max(0, cx - 2):cx + 3].reshape(-1, 3)
            distance = np.abs(window - colour).max(axis=1).min()
            assert distance <= 12, f"view {view['index']} box not drawn at ({px}, {py}): nearest colour off by {distance}"
    # the box is not everywhere: the centre of the image is not the colour of view 1
    centre = shot[shot.shape[0] // 2, shot.shape[1] // 2]
    assert not (np.abs(centre - np.array(view_box_colour(1))) <= 12).all()
    assert page.errors == []
    page.close()


def test_groups_and_changes_render_in_the_browser(browser, tmp_path, group_records, records, compare_runs):
    page = browser.open(build_report(write_run(tmp_path / "grpo", records[:2] + group_records)).path)
    assert page.evaluate("document.querySelectorAll('#group-list .group').length") == 1
    assert page.evaluate("document.querySelectorAll('#group-list table.members tr').length") == 1 + len(group_records)
    assert page.evaluate("document.querySelectorAll('#group-list img.mask').length") == 1
    assert page.errors == []
    page.close()
    a, b = compare_runs
    page = browser.open(build_report(a, b).path)
    assert page.evaluate("document.querySelectorAll('#change-list tr[data-change]').length") == len(records)
    _select(page, "change", "correct→wrong")
    assert page.evaluate("document.querySelectorAll('#change-list tr[data-change]').length") == 2
    page.evaluate("document.querySelector('#change-list button.link').click()")
    assert page.evaluate("document.querySelectorAll('#change-list tr.opened .detail').length") == 1
    _select(page, "agent", "1")  # the second trajectory source: run B's episodes (listed after A's in each pair)
    shown = page.evaluate("window.medvrReport.filtered()")
    assert len(shown) == len(records) and all(i % 2 == 1 for i in shown)
    assert page.errors == []
    page.close()
