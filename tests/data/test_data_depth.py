"""Depth for the data build: the colour-PNG decoder (vs the original's KD-tree search), float-map storage,
and Depth-Anything-V2 through transformers' pipeline on a tiny RANDOMLY INITIALISED model built from a config
(the real code path; its maps mean nothing, no weights are downloaded)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy.spatial import KDTree

from sifthinker.cli import main
from sifthinker.data.build import load_records
from sifthinker.method.depth import (
    ColourDepthDecoder,
    colorize,
    colorize_indexed,
    colour_png_bytes,
    load_depth_map,
    png_bytes,
    save_depth_map,
    spectral_palette,
)
from sifthinker.scenes import generate_scene


def dav2_rendering(depth: np.ndarray) -> np.ndarray:
    """How Depth-Anything-V2 (hence SIF-50K) renders a map: inverse depth to uint8 by truncation, truncated palette."""
    return spectral_palette(False)[((1.0 - depth) * 255.0).astype(np.uint8)]


def kdtree_decode(rgb: np.ndarray) -> np.ndarray:
    """The original method: the nearest palette colour of every pixel by a KD-tree."""
    _, idx = KDTree(spectral_palette(False).astype(np.float64)).query(rgb.reshape(-1, 3).astype(np.float64), k=1)
    return 1.0 - idx.reshape(rgb.shape[:2]) / 255.0


@pytest.fixture(scope="module")
def decoder() -> ColourDepthDecoder:
    return ColourDepthDecoder()


def test_decoding_a_rendered_scene_matches_the_kdtree_and_the_true_map(decoder):
    truth = generate_scene(3, 160, 120).depth
    rgb = dav2_rendering(truth)
    got = decoder.decode_rgb(rgb)
    assert got.dtype == np.float32 and got.shape == truth.shape
    assert np.allclose(got, kdtree_decode(rgb), atol=1e-6)  # the same answer as the original's search
    err = np.abs(got - truth)
    assert err.max() <= 1 / 255 + 1e-6 and err.mean() < 0.6 / 255  # 8-bit quantisation by truncation, no more


def test_colours_off_the_palette_get_the_nearest_one(decoder):
    rgb = dav2_rendering(np.tile(np.linspace(0, 1, 64, dtype=np.float32), (16, 1)))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=70)  # compression moves colours off the palette
    noisy = np.asarray(Image.open(buf).convert("RGB"))
    assert not np.array_equal(noisy, rgb)
    for _ in range(2):  # the second time from the table
        got, ref = decoder.decode_rgb(noisy), kdtree_decode(noisy)
        differ = np.argwhere(np.abs(got - ref) > 1e-6)
        pal = spectral_palette(False).astype(int)
        for r, c in differ:  # only where two palette colours are equally near (either is the nearest)
            dist = ((pal - noisy[r, c].astype(int)) ** 2).sum(1)
            i, j = (round((1 - v) * 255) for v in (got[r, c], ref[r, c]))
            assert dist[i] == dist[j] == dist.min()
        assert len(differ) < got.size / 20


def test_palette_images_grey_images_and_files(decoder, tmp_path):
    depth = generate_scene(4, 64, 48).depth
    p = colorize_indexed(depth)
    assert p.mode == "P" and np.array_equal(np.asarray(p.convert("RGB")), np.asarray(colorize(depth)))
    assert np.array_equal(decoder.decode(p), decoder.decode_rgb(np.asarray(p.convert("RGB"))))
    grey = np.repeat(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], 3, axis=2)  # near = white
    assert np.allclose(decoder.decode_rgb(grey)[0], 1 - np.arange(0, 256, 4) / 255)
    Image.fromarray(dav2_rendering(depth)).save(tmp_path / "x_d.png")
    assert np.allclose(decoder.decode(tmp_path / "x_d.png"), decoder.decode_rgb(dav2_rendering(depth)))


def test_the_builders_fast_pngs_decode_to_the_same_pixels():
    depth = generate_scene(6, 64, 48).depth
    colour = Image.open(io.BytesIO(colour_png_bytes(depth)))
    assert colour.mode == "P" and np.array_equal(np.asarray(colour.convert("RGB")), np.asarray(colorize(depth)))
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    back = Image.open(io.BytesIO(png_bytes(rgb)))
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), rgb)


@pytest.mark.parametrize("name, atol", [("m.npy", 5e-4), ("m.map.png", 1 / 65535)])
def test_float_maps_are_stored_compactly(tmp_path, name, atol):
    depth = generate_scene(5, 64, 48).depth
    save_depth_map(tmp_path / name, depth)
    back = load_depth_map(tmp_path / name)
    assert back.dtype == np.float32 and np.abs(back - depth).max() <= atol
    assert (tmp_path / name).stat().st_size < depth.astype(np.float32).nbytes  # smaller than float32


# ---- Depth-Anything-V2 (tiny, random) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dav2(tmp_path_factory):
    """A RANDOMLY INITIALISED Depth-Anything-V2 (DINOv2 backbone + DPT head) saved like the hub's checkpoints."""
    torch = pytest.importorskip("torch")
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            patch_size=14, image_size=56, out_indices=[1, 2, 3, 4], apply_layernorm=True,
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
                              fusion_hidden_size=8, head_hidden_size=8, patch_size=14, depth_estimation_type="relative")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-dav2")
    DepthAnythingForDepthEstimation(cfg).eval().save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      resize_method="lower_bound", do_pad=False).save_pretrained(folder)
    return folder


def test_depth_anything_v2_estimates_batched_maps_of_mixed_sizes(tiny_dav2):
    from sifthinker.data.depth_providers import DepthAnythingMaps

    maps = DepthAnythingMaps(str(tiny_dav2), device="cpu", batch_size=2)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in
              ((64, 48), (30, 60), (64, 48), (64, 48))]
    out = maps.estimate(images)
    assert [m.shape for m in out] == [(48, 64), (60, 30), (48, 64), (48, 64)]
    assert all(m.dtype == np.float32 and m.min() == 0.0 and m.max() == 1.0 for m in out)  # min-max normalised
    again = maps.estimate([images[1], images[0]])
    assert np.allclose(again[0], out[1], atol=1e-5) and np.allclose(again[1], out[0], atol=1e-5)


def test_a_build_with_dav2_depth_from_a_recipe(tiny_dav2, tmp_path):
    items = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "jsonl" / "items.jsonl"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"depth:\n  model: {tiny_dav2}\n  device: cpu\n  batch_size: 2\n")
    res = CliRunner().invoke(main, ["data", "build", "--source", "jsonl", "--input", str(items), "--depth", "dav2",
                                    "--recipe", str(recipe), "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    recs = load_records(tmp_path / "d")
    assert [r["id"] for r in recs] == ["kitchen-1", "street-1"]
    depth = load_depth_map(tmp_path / "d" / recs[1]["depth_map"])
    assert depth.shape == (96, 64) and depth.min() == 0.0 and depth.max() == 1.0
    manifest = (tmp_path / "d" / "build.json").read_text()
    assert str(tiny_dav2) in manifest and '"dav2"' in manifest
