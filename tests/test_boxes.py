"""Box conventions: agent coordinates -> original pixels, validation codes, and crops of crops in every format."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medvr_env import imaging
from medvr_env.boxes import BBOX_FORMATS, Box, box_from_agent, box_to_agent
from medvr_env.errors import ErrorCode, ToolError
from medvr_env.protocol import render_tool_call

try:
    from tests.helpers import CHOICE, YES_NO, make_env
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from helpers import CHOICE, YES_NO, make_env

FULL = Box(0, 0, 800, 600)  # view 0 of an 800x600 image, delivered at its own size


def convert(coords, fmt="norm", view_box=FULL, view_size=(800, 600), image_size=(800, 600), **kw) -> Box:
    return box_from_agent(coords, view_box=view_box, view_size=view_size, bbox_format=fmt, image_size=image_size, **kw)


# ----------------------------------------------------------------------------- box_from_agent
@pytest.mark.parametrize(
    ("coords", "fmt", "expected"),
    [
        ([0.25, 0.25, 0.75, 0.75], "norm", Box(200, 150, 600, 450)),
        ([250, 250, 750, 750], "norm1000", Box(200, 150, 600, 450)),
        ([200, 150, 600, 450], "pixel", Box(200, 150, 600, 450)),
        ([0, 0, 1, 1], "norm", FULL),
        # clamping to the view
        ([-0.5, -0.5, 0.5, 0.5], "norm", Box(0, 0, 400, 300)),
        ([0.5, 0.5, 1.7, 1.2], "norm", Box(400, 300, 800, 600)),
        ([-100, -100, 2000, 2000], "norm1000", FULL),
        ([-50, 100, 900, 700], "pixel", Box(0, 100, 800, 600)),
        # fractional pixels round outward
        ([100.4, 100.6, 199.2, 199.9], "pixel", Box(100, 100, 200, 200)),
    ],
)
def test_box_from_agent_maps_and_clamps(coords, fmt, expected) -> None:
    assert convert(coords, fmt) == expected


def test_clamping_is_to_the_source_view_not_the_image() -> None:
    view = Box(100, 100, 500, 400)  # 400 x 300 region, delivered at 200 x 150
    box = convert([-1, -1, 0.5, 0.5], "norm", view_box=view, view_size=(200, 150))
    assert box == Box(100, 100, 300, 250)
    box = convert([150, 100, 999, 999], "pixel", view_box=view, view_size=(200, 150))
    assert box == Box(400, 300, 500, 400)


@pytest.mark.parametrize(
    ("coords", "expected"),
    [
        ([100, 100, 110, 110], Box(91, 91, 119, 119)),  # grown about its centre
        ([0, 0, 3, 3], Box(0, 0, 28, 28)),  # at the top-left corner
        ([795, 595, 800, 600], Box(772, 572, 800, 600)),  # at the bottom-right corner
        ([790, 10, 799, 12], Box(772, 0, 800, 28)),  # near the right and top edges
        ([100, 100, 300, 105], Box(100, 88, 300, 116)),  # only the short side grows (round half to even)
    ],
)
def test_tiny_boxes_grow_to_min_side_inside_the_image(coords, expected) -> None:
    box = convert(coords, "pixel", min_side=28)
    assert box == expected
    assert box.width >= 28 and box.height >= 28
    assert 0 <= box.x1 < box.x2 <= 800 and 0 <= box.y1 < box.y2 <= 600


def test_growth_never_exceeds_the_image() -> None:
    assert convert([0.4, 0.4, 0.41, 0.41], "norm", min_side=5000) == FULL
    # a sub-view: growth may leave the view but never the image
    view = Box(780, 580, 800, 600)
    box = convert([0, 0, 1, 1], "norm", view_box=view, view_size=(20, 20), min_side=28)
    assert box == Box(772, 572, 800, 600)


@pytest.mark.parametrize(
    ("coords", "fmt", "code"),
    [
        ([0.5, 0.1, 0.2, 0.4], "norm", ErrorCode.INVERTED_BOX),
        ([0.1, 0.5, 0.2, 0.4], "norm", ErrorCode.INVERTED_BOX),
        ([600, 400, 100, 100], "pixel", ErrorCode.INVERTED_BOX),
        ([0.2, 0.2, 0.2, 0.5], "norm", ErrorCode.DEGENERATE_BOX),
        ([100, 300, 500, 300], "norm1000", ErrorCode.DEGENERATE_BOX),
        ([0, 500, 1000, 501], "norm1000", ErrorCode.ABSURD_ASPECT),  # 800 x 0.6 px
        ([10, 10, 12, 500], "pixel", ErrorCode.ABSURD_ASPECT),  # 2 x 490: rejected before any growth
        ([1.1, 0.1, 1.5, 0.5], "norm", ErrorCode.BOX_OUTSIDE_VIEW),
        ([0.1, -0.5, 0.5, -0.1], "norm", ErrorCode.BOX_OUTSIDE_VIEW),
        ([1.0, 0.0, 1.2, 0.5], "norm", ErrorCode.BOX_OUTSIDE_VIEW),  # touches the edge only
        ([900, 0, 1000, 100], "pixel", ErrorCode.BOX_OUTSIDE_VIEW),
        ([math.nan, 0, 1, 1], "norm", ErrorCode.NON_FINITE),
        ([0, 0, math.inf, 1], "norm", ErrorCode.NON_FINITE),
        ([0, -math.inf, 1, 1], "pixel", ErrorCode.NON_FINITE),
        ([0, 0, 1], "norm", ErrorCode.WRONG_TYPE),
    ],
)
def test_box_from_agent_errors(coords, fmt, code) -> None:
    with pytest.raises(ToolError) as exc:
        convert(coords, fmt)
    assert exc.value.error.code is code
    assert exc.value.error.message


def test_max_aspect_is_configurable() -> None:
    coords = [0, 0, 0.5, 0.1]  # 400 x 60 px, aspect 6.7
    assert convert(coords, "norm", max_aspect=7) == Box(0, 0, 400, 60)
    with pytest.raises(ToolError) as exc:
        convert(coords, "norm", max_aspect=6)
    assert exc.value.error.code is ErrorCode.ABSURD_ASPECT


# ----------------------------------------------------------------------------- box_to_agent
def test_box_to_agent_exact_values() -> None:
    box = Box(200, 150, 600, 450)
    assert box_to_agent(box, FULL, (800, 600), "pixel") == [200, 150, 600, 450]
    assert box_to_agent(box, FULL, (800, 600), "norm") == [0.25, 0.25, 0.75, 0.75]
    assert box_to_agent(box, FULL, (800, 600), "norm1000") == [250, 250, 750, 750]
    view = Box(512, 384, 1536, 1152)  # delivered at 448 x 336
    assert box_to_agent(Box(640, 768, 1152, 1152), view, (448, 336), "pixel") == [56, 168, 280, 336]


@pytest.mark.parametrize("fmt", BBOX_FORMATS)
def test_box_to_agent_is_inverse_within_rounding(fmt: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        img_w, img_h = (int(v) for v in rng.integers(200, 3000, size=2))
        vx1, vy1 = int(rng.integers(0, img_w - 100)), int(rng.integers(0, img_h - 100))
        view = Box(vx1, vy1, int(rng.integers(vx1 + 100, img_w + 1)), int(rng.integers(vy1 + 100, img_h + 1)))
        view_size = imaging.scale_longest_to(view.width, view.height, 448)
        bx1, by1 = int(rng.integers(view.x1, view.x2 - 40)), int(rng.integers(view.y1, view.y2 - 40))
        box = Box(bx1, by1, int(rng.integers(bx1 + 40, view.x2 + 1)), int(rng.integers(by1 + 40, view.y2 + 1)))

        coords = box_to_agent(box, view, view_size, fmt)
        back = box_from_agent(
            coords, view_box=view, view_size=view_size, bbox_format=fmt, image_size=(img_w, img_h), min_side=1
        )
        # one agent unit in original pixels along x / y; rounding to it, then outward to whole pixels
        unit = {
            "pixel": (view.width / view_size[0], view.height / view_size[1]),
            "norm": (view.width * 1e-4, view.height * 1e-4),
            "norm1000": (view.width / 1000, view.height / 1000),
        }[fmt]
        tol_x, tol_y = unit[0] / 2 + 1, unit[1] / 2 + 1
        for got, want, tol in zip(back.as_list(), box.as_list(), (tol_x, tol_y, tol_x, tol_y)):
            assert abs(got - want) <= tol, (fmt, box, back, coords)
        if fmt in ("pixel", "norm1000"):
            assert all(float(c).is_integer() for c in coords)


# ----------------------------------------------------------------------------- crops of crops
# Sample CHOICE is 2048 x 1536; view 0 is delivered at 1024 x 768 (max_view_side=1024), zooms at 448 px.
CHAIN = {
    # step 1: zoom on view 0 -> [512, 384, 1536, 1152], delivered 448 x 336
    # step 2: zoom on view 1 (x 1/8..5/8, y 1/2..1) -> [640, 768, 1152, 1152], delivered 448 x 336
    # step 3: crop of view 2 (x 1/2..1, y 0..1/2) -> [896, 768, 1152, 960], delivered 256 x 192 (native)
    "pixel": ([256, 192, 768, 576], [56, 168, 280, 336], [224, 0, 448, 168]),
    "norm": ([0.25, 0.25, 0.75, 0.75], [0.125, 0.5, 0.625, 1.0], [0.5, 0.0, 1.0, 0.5]),
    "norm1000": ([250, 250, 750, 750], [125, 500, 625, 1000], [500, 0, 1000, 500]),
}
EXPECTED_BOXES = [[512, 384, 1536, 1152], [640, 768, 1152, 1152], [896, 768, 1152, 960]]
EXPECTED_SIZES = [(448, 336), (448, 336), (256, 192)]


def _action(path: str, name: str, arguments: dict):
    if path == "text":
        return render_tool_call(name, arguments, think="looking closer")
    return {"name": name, "arguments": arguments}


def _expected_pixels(original: np.ndarray, box: list[int], size: tuple[int, int]) -> np.ndarray:
    return imaging.resize(original[box[1] : box[3], box[0] : box[2]], size)


@pytest.mark.parametrize("path", ["text", "call"])
@pytest.mark.parametrize("fmt", BBOX_FORMATS)
def test_crops_of_crops(fmt: str, path: str) -> None:
    env = make_env(bbox_format=fmt, view_size=448, max_view_side=1024, max_steps=8)
    obs, info = env.reset(options={"index": CHOICE})
    original = env.episode.original
    assert env.episode.views[0].size == (1024, 768)
    assert np.array_equal(info["views"][0], _expected_pixels(original, [0, 0, 2048, 1536], (1024, 768)))

    first, second, third = CHAIN[fmt]
    actions = [
        ("zoom", {"bbox_2d": first}),
        ("zoom", {"bbox_2d": second, "source": 1}),
        ("crop", {"bbox_2d": third, "source": 2}),
    ]
    for i, ((name, args), box, size) in enumerate(zip(actions, EXPECTED_BOXES, EXPECTED_SIZES), start=1):
        obs, reward, terminated, truncated, info = env.step(_action(path, name, args))
        assert info["error"] == "", info["error_message"]
        view = env.episode.views[i]
        assert view.box.as_list() == box
        assert info["applied_box"] == box
        assert view.size == size
        assert view.parent == i - 1
        assert view.tool == name
        assert info["view_index"] == i and info["num_views"] == i + 1
        assert len(info["views"]) == 1
        assert np.array_equal(info["views"][0], _expected_pixels(original, box, size))
        assert np.array_equal(obs["image"], _expected_pixels(original, box, (env.obs_size, env.obs_size)))
        np.testing.assert_allclose(obs["view_box"], np.array(box) / [2048, 1536, 2048, 1536], atol=1e-6)
        assert env.observation_space.contains(obs)
        assert not (terminated or truncated)

    # the same box on view 1 while view 3 is current: source decides the frame, not the current view
    obs, _, _, _, info = env.step(_action(path, "zoom", {"bbox_2d": second, "source": 1}))
    assert info["applied_box"] == EXPECTED_BOXES[1]
    # without source the box is read on the current view (view 4 = view 2's region)
    obs, _, _, _, info = env.step(_action(path, "crop", {"bbox_2d": third}))
    assert info["applied_box"] == EXPECTED_BOXES[2]
    assert env.episode.views[5].parent == 4


@pytest.mark.parametrize("fmt", BBOX_FORMATS)
def test_relook(fmt: str) -> None:
    env = make_env(bbox_format=fmt, view_size=448, max_view_side=1024)
    env.reset(options={"index": CHOICE})
    original = env.episode.original
    env.step({"name": "zoom", "arguments": {"bbox_2d": CHAIN[fmt][0]}})
    env.step({"name": "zoom", "arguments": {"bbox_2d": CHAIN[fmt][1]}})

    _, _, _, _, info = env.step(render_tool_call("relook", {"view": 1}))
    assert info["error"] == ""
    relooked = env.episode.views[3]
    assert relooked.box == env.episode.views[1].box
    assert relooked.parent == 1 and relooked.tool == "relook"
    # full quality: the 1024 x 768 region fits the budget, so it comes back pixel for pixel
    assert relooked.size == (1024, 768)
    assert env.episode.views[1].size == (448, 336)
    assert np.array_equal(info["views"][0], original[384:1152, 512:1536])
    assert info["applied_box"] is None

    _, _, _, _, info = env.step(render_tool_call("relook", {}))
    assert info["error"] == ""
    full = env.episode.views[4]
    assert full.box == Box(0, 0, 2048, 1536)
    assert full.parent is None
    assert full.size == (1024, 768)  # shrunk only to the image budget
    assert np.array_equal(info["views"][0], _expected_pixels(original, [0, 0, 2048, 1536], (1024, 768)))
    assert env.episode.zoom_boxes == [env.episode.views[1].box, env.episode.views[2].box]


def test_relook_small_image_is_exact() -> None:
    env = make_env()
    env.reset(options={"index": YES_NO})  # 800 x 600, inside the budget
    env.step({"name": "zoom", "arguments": {"bbox_2d": [0.1, 0.1, 0.3, 0.4]}})
    _, _, _, _, info = env.step({"name": "relook", "arguments": {}})
    assert np.array_equal(info["views"][0], env.episode.original)
    assert env.episode.view.size == (800, 600)


def test_pixel_format_on_view_zero_of_a_shrunk_image() -> None:
    # "pixel" boxes on view 0 are pixels of the delivered (shrunk) image, not of the original
    env = make_env(bbox_format="pixel", max_view_side=512)
    env.reset(options={"index": CHOICE})
    assert env.episode.views[0].size == (512, 384)
    _, _, _, _, info = env.step({"name": "crop", "arguments": {"bbox_2d": [128, 96, 384, 288]}})
    assert info["applied_box"] == [512, 384, 1536, 1152]
    assert env.episode.view.size == (512, 384)  # crop shrinks only to max_view_side


@pytest.mark.parametrize(
    ("action", "code"),
    [
        ({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5], "source": 2}}, ErrorCode.BAD_VIEW_INDEX),
        ({"name": "crop", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5], "source": 99}}, ErrorCode.BAD_VIEW_INDEX),
        ({"name": "relook", "arguments": {"view": 2}}, ErrorCode.BAD_VIEW_INDEX),
        ({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5], "source": -1}}, ErrorCode.OUT_OF_RANGE),
        ({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5], "source": 0.5}}, ErrorCode.WRONG_TYPE),
        ({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 0.5]}}, ErrorCode.WRONG_TYPE),
        ({"name": "zoom", "arguments": {"bbox_2d": [0.5, 0, 0.2, 0.5]}}, ErrorCode.INVERTED_BOX),
        ({"name": "zoom", "arguments": {}}, ErrorCode.MISSING_ARGUMENT),
        ({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 1, 1], "zoom": 2}}, ErrorCode.UNKNOWN_ARGUMENT),
    ],
)
def test_bad_view_index_and_argument_errors(action, code) -> None:
    env = make_env()
    env.reset(options={"index": YES_NO})
    env.step({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5]}})  # views 0 and 1 exist
    obs, reward, _, _, info = env.step(action)
    assert info["error"] == code.value
    assert info["num_views"] == 2 and info["views"] == ()
    assert info["applied_box"] is None
    assert obs["feedback"].startswith(f"Error ({code.value})")
    assert reward == pytest.approx(env.format_penalty)
    # a valid source still works after the error
    _, _, _, _, info = env.step({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 1, 1], "source": 1}})
    assert info["error"] == "" and info["applied_box"] == [0, 0, 400, 300]
