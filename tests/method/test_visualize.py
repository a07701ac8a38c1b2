import numpy as np
from PIL import Image

from sifthinker.method.visualize import (
    MIN_SIDE,
    STEP_COLORS,
    _to_pixels,
    draw_trace,
    save_trace_png,
    trace_boxes,
)

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
    assert both.width == 2 * plain.width + 8  # two panels and the gap between them
    assert both.height > plain.height  # title strip
    arr = np.asarray(both)
    left, right = arr[:, : plain.width], arr[:, plain.width + 8 :]

    def has(a, color):
        return bool((a == color).all(axis=-1).any())

    assert has(right, (200, 0, 0)) and not has(left, (200, 0, 0))  # the depth panel is on the right
    assert has(left, (255, 0, 255)) and has(right, (255, 0, 255))  # GT box in magenta on both panels
    assert has(left, STEP_COLORS[1]) and has(right, STEP_COLORS[1])  # and the trace's boxes
    assert not has(np.asarray(plain), (255, 0, 255))  # no GT given: no magenta


def test_invalid_trace_draws_what_parses_and_says_invalid():
    broken = VALID.replace("</think>", "")
    areas, answer, problems = trace_boxes(broken)
    assert [[b.xyxy() for b in a] for a in areas] == [[(0.0, 0.0, 1.0, 1.0)], [(0.25, 0.25, 0.75, 0.75)]]
    assert answer == "red cube" and problems == ["expected exactly one </think>, found 0"]
    out = draw_trace(_image(), broken)
    valid = draw_trace(_image(), VALID)
    assert out.height > valid.height  # the extra "invalid format" line
    arr = np.asarray(out)
    scale = -(-MIN_SIDE // 48)
    assert tuple(arr[int(0.5 * 48 * scale), int(0.25 * 64 * scale) + 1]) == STEP_COLORS[1]


def test_garbage_and_out_of_range_boxes_do_not_crash():
    cases = {  # text -> whether a box is recovered and drawn
        "": False,
        "no tags at all": False,
        '<area>[{"bbox_2d":[-1,2,5,0.1],"depth":9}]</area><answer></answer>': True,  # clipped to the image
        '<area>{"bbox_2d":[0.1,0.1,0.2,0.2],"depth":0.3}</area>': True,  # a lone object is one box
    }
    scale = -(-MIN_SIDE // 48)
    for text, drawn in cases.items():
        img = draw_trace(_image(), text, title="t")
        assert img.mode == "RGB" and img.width == 64 * scale, text
        assert (np.asarray(img) == STEP_COLORS[0]).all(axis=-1).any() == drawn, text


def test_many_steps_cycle_colours_and_small_images_upscale():
    steps = "".join(f'<area>[{{"bbox_2d":[0,0,1,1],"depth":0.{i}}}]</area><text>s{i}</text>' for i in range(10))
    out = draw_trace(_image(10, 10), f"<think>{steps}</think><answer>a</answer>")
    assert out.width == MIN_SIDE  # 10 px upscaled 48 times
    # full-image frames are inset by lw * (step % 4), lw = 3 here; a later step paints over an earlier
    # one at the same inset, and step i uses colour i % 8: steps 8 and 9 wrap around to colours 0 and 1
    row = np.asarray(out)[MIN_SIDE // 2]
    assert [tuple(row[x]) for x in (0, 3, 6, 9)] == [STEP_COLORS[0], STEP_COLORS[1], STEP_COLORS[6], STEP_COLORS[7]]


def test_save_trace_png(tmp_path):
    p = save_trace_png(_image(), VALID, tmp_path / "sub" / "x.png", "title", depth_image=_image())
    assert p == tmp_path / "sub" / "x.png"
    with Image.open(p) as im:  # exactly the drawn image, losslessly
        assert im.format == "PNG"
        drawn = draw_trace(_image(), VALID, "title", depth_image=_image())
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(drawn))
