import numpy as np
import pytest

from sifthinker.depth import box_pixels, colorize, from_inverse_depth, mean_depth, normalize_relative
from sifthinker.prompts import INSTRUCTION, chat_messages, prompt_text, question_from_prompt


def test_normalize_relative_min_max():
    d = normalize_relative(np.array([[2.0, 4.0], [6.0, 10.0]]))
    assert d.min() == 0.0 and d.max() == 1.0 and d[0, 1] == pytest.approx(0.25)
    assert np.all(normalize_relative(np.ones((3, 3))) == 0)
    with pytest.raises(ValueError):
        normalize_relative(np.array([[np.inf, 1.0]]))


def test_inverse_depth_flips_near_and_far():
    # disparity: large = near, so the largest disparity becomes depth 0
    d = from_inverse_depth(np.array([[10.0, 1.0]]))
    assert d[0, 0] == 0.0 and d[0, 1] == 1.0


def test_colorize_near_is_red_far_is_blue():
    img = np.asarray(colorize(np.array([[0.0, 1.0]], dtype=np.float32)))
    near, far = img[0, 0].astype(int), img[0, 1].astype(int)
    assert near[0] > near[2] + 80, "near renders red (Spectral_r high end)"
    assert far[2] > far[0] + 50, "far renders blue (Spectral_r low end)"


def test_mean_depth_in_box_uses_per_axis_pixels():
    depth = np.zeros((100, 200), dtype=np.float32)
    depth[:, 100:] = 1.0  # right half far
    assert mean_depth(depth, (0.5, 0.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert mean_depth(depth, (0.25, 0.0, 0.75, 1.0)) == pytest.approx(0.5)
    assert box_pixels((0.999, 0.999, 1.0, 1.0), 200, 100) == (199, 99, 200, 100)  # at least one pixel


def test_prompt_forms_agree():
    q = "Is the red cube left of the blue sphere?"
    text = prompt_text(q)
    assert text.startswith("Original image: <image>\nDepth image: <image>\n") and text.endswith(INSTRUCTION)
    assert question_from_prompt(text) == q
    msgs = chat_messages(q, answer="<think>x</think>")
    parts = msgs[0]["content"]
    assert [p["type"] for p in parts].count("image") == 2
    assert msgs[1]["role"] == "assistant"
