"""The ``sif`` object of every reply: the generated SIF trace parsed, its boxes in both frames, and
(on request) the image with the focus boxes drawn.

Boxes in the trace are per-axis normalised (spec section 6); ``bbox_px`` is the same box in pixels of
the first RGB image of the request, converted by :func:`sifthinker.method.geometry.from_norm` (the one place
conversions happen). A trace that is not valid SIF has ``trace: null`` and its ``problems`` listed; its
answer is what the lenient extractor recovers.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from sifthinker.method import trace as sif
from sifthinker.method.geometry import Frame, from_norm


def sif_summary(text: str, image_size: tuple[int, int] | None = None) -> dict:
    """``{"answer", "trace", "format_valid", "problems"}`` for a generated text (plus ``image_size`` and
    each box's ``bbox_px`` when the image size is given).

    ``trace`` is ``[{"boxes": [{"bbox_2d": [x1,y1,x2,y2], "depth": d, "bbox_px"?}], "text": ...}]`` for a
    valid trace, else null; ``answer`` is null when the text has no ``<answer>``.
    """
    problems = sif.validate(text)
    steps = None
    answer = None
    if not problems:
        try:
            t = sif.parse(text)
        except sif.TraceFormatError as e:  # validate and parse should agree; be safe
            problems = [str(e)]
        else:
            answer = t.answer
            steps = [{"boxes": [_box(b, image_size) for b in s.boxes], "text": s.text} for s in t.steps]
    if answer is None:
        answer = sif.extract_answer(text)
    out: dict[str, Any] = {"answer": answer, "trace": steps, "format_valid": not problems, "problems": list(problems)}
    if image_size is not None:
        out["image_size"] = list(image_size)
    return out


def _box(b: Any, image_size: tuple[int, int] | None) -> dict:
    box: dict[str, Any] = {"bbox_2d": [b.x1, b.y1, b.x2, b.y2], "depth": b.depth}
    if image_size is not None:
        w, h = image_size
        box["bbox_px"] = [round(v, 1) for v in from_norm((b.x1, b.y1, b.x2, b.y2), Frame.PIXEL, w, h)]
    return box


def sif_object(text: str, image: Image.Image | None = None, depth_image: Image.Image | None = None,
               draw: bool = False) -> dict:
    """The reply's ``sif`` object; with ``draw``, ``drawing`` is the image (and its depth image beside it)
    with the focus boxes drawn, as a PNG data URL."""
    out = sif_summary(text, image.size if image is not None else None)
    if draw and image is not None:
        from sifthinker.method.visualize import draw_trace
        from sifthinker.serving.images import data_url

        out["drawing"] = data_url(draw_trace(image, text, depth_image=depth_image))
    return out
