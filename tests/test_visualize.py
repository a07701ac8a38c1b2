import numpy as np
from PIL import Image

from sifthinker.visualize import MIN_SIDE, STEP_COLORS, _to_pixels, draw_trace, save_trace_png, trace_boxes

VALID = (
    "<think>\n"
    '<area>[{"bbox_2d":[0,0,1,1],"depth":0.5}]</area>\n<text>whole image</text>\n'
    '<area>[{"bbox_2d":[0.25,0.25,0.75,0.75],"depth":0.2}]</area>\n<text>the cube</text>\n'
    "</think>\n<answer>red cube</answer>"
)


def _image(w=64, h=48, color=(90, 90, 90)):
    return Image.new("RGB", (w, h), color)


def test_pixel_conversion_goes_through_geometry_per_axis():
    # x by width, y by height; PIL rectangles are inclusive, so the far edge is the last covered pixel.
    assert _to_pixels((0.5, 0.5, 1.0, 1.0), 100, 50) == (50.0, 25.0, 99.0, 49.0)
    assert _to_pixels((-0.2, 0.0, 1.5, 0.5), 100, 50) == (0.0, 0.0, 99.0, 24.0)  # clipped
    assert _to_pixels((0.6, 0.1, 0.4, 0.2), 100, 50) == (40.0, 5.0, 59.0, 9.0)  # reversed corners
    assert _to_pixels((1.2, 0.0, 1.5, 1.0), 100, 50) is None  # fully off-image


def test_valid_trace_draws_each_step_in_its_colour():
    out = draw_trace(_image(), VALID)
    scale = -(-MIN_SIDE // 48)
    assert out.width == 64 * scale and out.height > 48 * scale  # upscaled, caption strip below
    arr = np.asarray(out)
    # step 2's box [0.25, 0.75] x [0.25, 0.75]: its left edge at x = 0.25 * W, mid-height
    x, y = int(0.25 * 64 * scale) + 1, int(0.5 * 48 * scale)
    assert tuple(arr[y, x]) == STEP_COLORS[1]
    # step 1 (full image) outlines the image border
    assert tuple(arr[int(0.6 * 48 * scale), 0]) == STEP_COLORS[0]
    # the image interior away from boxes is untouched
    assert tuple(arr[int(0.5 * 48 * scale), int(0.5 * 64 * scale)]) == (90, 90, 90)


def test_side_by_side_with_depth_and_title_and_gt():
    plain = draw_trace(_image(), VALID)
    both = draw_trace(_image(), VALID, "item 1: which is closer?", depth_image=_image(color=(200, 0, 0)),
                      gt_boxes=[(0.1, 0.1, 0.2, 0.2)])
    assert both.width > 2 * plain.width - 1
    assert both.height > plain.height  # title strip
    arr = np.asarray(both)
    assert (arr == (200, 0, 0)).all(axis=-1).any()  # the depth panel is there
    assert (arr == (255, 0, 255)).all(axis=-1).any()  # GT box in magenta


def test_invalid_trace_draws_what_parses_and_says_invalid():
    broken = VALID.replace("</think>", "")
    areas, answer, problems = trace_boxes(broken)
    assert len(areas) == 2 and answer == "red cube" and problems
    out = draw_trace(_image(), broken)
    valid = draw_trace(_image(), VALID)
    assert out.height > valid.height  # the extra "invalid format" line
    arr = np.asarray(out)
    scale = -(-MIN_SIDE // 48)
    assert tuple(arr[int(0.5 * 48 * scale), int(0.25 * 64 * scale) + 1]) == STEP_COLORS[1]


def test_garbage_and_out_of_range_boxes_do_not_crash():
    for text in ["", "no tags at all", '<area>[{"bbox_2d":[-1,2,5,0.1],"depth":9}]</area><answer></answer>',
                 '<area>{"bbox_2d":[0.1,0.1,0.2,0.2],"depth":0.3}</area>']:
        img = draw_trace(_image(), text, title="t")
        assert img.mode == "RGB"


def test_many_steps_cycle_colours_and_small_images_upscale():
    steps = "".join(f'<area>[{{"bbox_2d":[0,0,1,1],"depth":0.{i}}}]</area><text>s{i}</text>' for i in range(10))
    out = draw_trace(_image(10, 10), f"<think>{steps}</think><answer>a</answer>")
    assert min(out.size) >= MIN_SIDE


def test_save_trace_png(tmp_path):
    p = save_trace_png(_image(), VALID, tmp_path / "sub" / "x.png", "title", depth_image=_image())
    assert p.is_file()
    with Image.open(p) as im:
        assert im.format == "PNG" and im.width > 64
