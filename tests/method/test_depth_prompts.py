import numpy as np
import pytest

from sifthinker.method.depth import box_pixels, colorize, from_inverse_depth, mean_depth, normalize_relative
from sifthinker.method.prompts import INSTRUCTION, chat_messages, prompt_text, question_from_prompt


def test_normalize_relative_min_max():
    d = normalize_relative(np.array([[2.0, 4.0], [6.0, 10.0]]))
    np.testing.assert_allclose(d, [[0.0, 0.25], [0.5, 1.0]])  # (v - 2) / (10 - 2)
    assert np.all(normalize_relative(np.ones((3, 3))) == 0)
    with pytest.raises(ValueError, match="depth map has non-finite values"):
        normalize_relative(np.array([[np.inf, 1.0]]))


def test_inverse_depth_flips_near_and_far():
    # disparity: large = near, so the largest disparity becomes depth 0
    d = from_inverse_depth(np.array([[10.0, 1.0]]))
    assert d[0, 0] == 0.0 and d[0, 1] == 1.0


def test_colorize_near_is_red_far_is_blue():
    img = np.asarray(colorize(np.array([[0.0, 1.0, 0.5]], dtype=np.float32))).astype(int)
    # Spectral_r(1 - depth): near is Spectral's red end #9e0142, far its blue end #5e4fa2
    assert img[0, 0].tolist() == [158, 1, 66] and img[0, 1].tolist() == [94, 79, 162]
    assert np.abs(img[0, 2] - [255, 255, 191]).max() <= 1  # the pale yellow middle #ffffbf


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
    # the chat form is the same text with the two <image> placeholders as image parts, in order
    user = {"role": "user", "content": [
        {"type": "text", "text": "Original image: "}, {"type": "image"}, {"type": "text", "text": "\nDepth image: "},
        {"type": "image"}, {"type": "text", "text": f"\n{q} {INSTRUCTION}"}]}
    assert text == f"Original image: <image>\nDepth image: <image>\n{q} {INSTRUCTION}"
    assert chat_messages(q) == [user]
    assert chat_messages(q, answer="<think>x</think>") == [
        user, {"role": "assistant", "content": [{"type": "text", "text": "<think>x</think>"}]}]
