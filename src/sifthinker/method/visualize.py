"""Draw a SIF trace on its image: each area's boxes numbered by step with the stated depth.

Boxes arrive per-axis normalised; the one conversion to pixels is :func:`sifthinker.method.geometry.from_norm`
(``Frame.PIXEL``). Invalid traces are drawn too: whatever :func:`sifthinker.method.trace.extract_areas` can
recover is shown and the caption says "invalid format" with the first problem found.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sifthinker.method import trace as sif_trace
from sifthinker.method.geometry import Frame, from_norm

__all__ = ["STEP_COLORS", "draw_trace", "save_trace_png", "trace_boxes"]

BoxT = tuple[float, float, float, float]

# Distinct, colour-blind-friendly-ish hues (Okabe-Ito plus extras); step i uses STEP_COLORS[i % len].
STEP_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
    (0, 114, 178), (213, 94, 0), (204, 121, 167), (255, 255, 255),
)
GT_COLOR = (255, 0, 255)
MIN_SIDE = 480  # small images are upscaled so that labels stay legible
_BG = (24, 24, 24)
_FG = (240, 240, 240)
_WARN = (255, 110, 110)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def trace_boxes(trace_text: str) -> tuple[list[list[sif_trace.Box]], str | None, list[str]]:
    """(areas, answer, problems): strictly parsed when valid, else leniently extracted."""
    problems = sif_trace.validate(trace_text)
    if not problems:
        t = sif_trace.parse(trace_text)
        return [list(s.boxes) for s in t.steps], t.answer, []
    return sif_trace.extract_areas(trace_text), sif_trace.extract_answer(trace_text), problems


def _to_pixels(box: BoxT, width: int, height: int) -> tuple[float, float, float, float] | None:
    """Normalised box -> inclusive pixel corners clipped to a ``width x height`` canvas; None if empty.

    The conversion itself is :func:`sifthinker.method.geometry.from_norm` to ``Frame.PIXEL`` (edges in
    continuous pixel coordinates); PIL's rectangle is inclusive, hence the ``- 1`` on the far edges.
    """
    x1, y1, x2, y2 = from_norm(tuple(float(v) for v in box), Frame.PIXEL, width, height)
    x1, x2 = max(0.0, min(x1, x2)), min(float(width - 1), max(x1, x2) - 1)
    y1, y2 = max(0.0, min(y1, y2)), min(float(height - 1), max(y1, y2) - 1)
    return (x1, y1, x2, y2) if x2 >= x1 and y2 >= y1 else None


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        words, cur = para.split(" "), ""
        for w in words:
            cand = f"{cur} {w}".strip()
            if cur and draw.textlength(cand, font=font) > width:
                lines.append(cur)
                cur = w
            else:
                cur = cand
        lines.append(cur)
    return lines


def _draw_boxes(
    img: Image.Image, areas: Sequence[Sequence[sif_trace.Box]], gt_boxes: Sequence[BoxT] | None, font
) -> None:
    draw = ImageDraw.Draw(img)
    w, h = img.size
    lw = max(2, round(min(w, h) / 160))
    for i, boxes in enumerate(areas):
        color = STEP_COLORS[i % len(STEP_COLORS)]
        inset = lw * (i % 4)  # nested full-image boxes stay visible as separate frames
        for b in boxes:
            px = _to_pixels(b.xyxy(), w, h)
            if px is None:
                continue
            x1, y1, x2, y2 = px
            if b.is_full_image():
                x1, y1, x2, y2 = x1 + inset, y1 + inset, x2 - inset, y2 - inset
            draw.rectangle((x1, y1, x2, y2), outline=color, width=lw)
            label = f"{i + 1} d={sif_trace.fmt_num(b.depth)}"
            tx, ty = x1 + lw, y1 + lw
            left, top, right, bottom = draw.textbbox((tx, ty), label, font=font)
            draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=color)
            draw.text((tx, ty), label, fill=(0, 0, 0), font=font)
    for gt in gt_boxes or ():
        # Drawn last and just outside the box, so a prediction on the GT leaves both outlines visible.
        px = _to_pixels(tuple(gt), w, h)  # type: ignore[arg-type]
        if px:
            x1, y1, x2, y2 = px
            draw.rectangle((max(0, x1 - lw), max(0, y1 - lw), min(w - 1, x2 + lw), min(h - 1, y2 + lw)),
                           outline=GT_COLOR, width=max(1, lw // 2))


def draw_trace(
    image: Image.Image,
    trace_text: str,
    title: str | None = None,
    *,
    depth_image: Image.Image | None = None,
    gt_boxes: Sequence[BoxT] | None = None,
) -> Image.Image:
    """Return a new RGB image: ``image`` (and ``depth_image`` beside it) with the trace's areas drawn.

    Step ``k``'s boxes share one colour and carry the label ``"k d=<stated depth>"``; ``gt_boxes``
    (normalised) are outlined in magenta. A caption strip below holds the answer and, for an invalid
    trace, "invalid format" with the first problem; ``title`` goes in a strip on top.
    """
    areas, answer, problems = trace_boxes(trace_text)
    rgb = image.convert("RGB")
    scale = max(1, -(-MIN_SIDE // max(1, min(rgb.size))))
    if scale > 1:
        rgb = rgb.resize((rgb.width * scale, rgb.height * scale), Image.NEAREST)
    font = _font(max(11, round(min(rgb.size) / 28)))
    panels = [rgb]
    if depth_image is not None:
        panels.append(depth_image.convert("RGB").resize(rgb.size, Image.BILINEAR))
    for p in panels:
        _draw_boxes(p, areas, gt_boxes, font)

    gap = 8 if len(panels) > 1 else 0
    body_w = sum(p.width for p in panels) + gap * (len(panels) - 1)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cap = f"answer: {answer}" if answer is not None else "answer: (missing)"
    if gt_boxes:
        cap += "   [magenta: ground-truth boxes]"
    cap_lines = _wrap(probe, cap, font, body_w - 16)
    warn_lines = (
        _wrap(probe, f"invalid format ({len(problems)} problem(s)): {problems[0]}", font, body_w - 16)
        if problems
        else []
    )
    title_lines = _wrap(probe, title, font, body_w - 16) if title else []
    line_h = round(font.size * 1.3) if hasattr(font, "size") else 14
    top = len(title_lines) * line_h + (8 if title_lines else 0)
    bottom = (len(cap_lines) + len(warn_lines)) * line_h + 8
    canvas = Image.new("RGB", (body_w, top + rgb.height + bottom), _BG)
    x = 0
    for p in panels:
        canvas.paste(p, (x, top))
        x += p.width + gap
    draw = ImageDraw.Draw(canvas)
    y = 4
    for line in title_lines:
        draw.text((8, y), line, fill=_FG, font=font)
        y += line_h
    y = top + rgb.height + 4
    for line in cap_lines:
        draw.text((8, y), line, fill=_FG, font=font)
        y += line_h
    for line in warn_lines:
        draw.text((8, y), line, fill=_WARN, font=font)
        y += line_h
    return canvas


def save_trace_png(
    image: Image.Image,
    trace_text: str,
    path: str | Path,
    title: str | None = None,
    *,
    depth_image: Image.Image | None = None,
    gt_boxes: Sequence[BoxT] | None = None,
) -> Path:
    """:func:`draw_trace` written to ``path`` as PNG (parent folders created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    draw_trace(image, trace_text, title, depth_image=depth_image, gt_boxes=gt_boxes).save(p, format="PNG")
    return p
