"""The base images of ``images/``: read ``bases.env``, resolve each tag to its digest, write the pins.

``images/bases.env`` names every base image as ``NAME=REF``. A REF is a tag (``python:3.11-slim-bookworm``)
until ``make pin-bases`` (:func:`pin_bases`) has asked the registry for that tag's digest; then it reads
``TAG@sha256:...``, the digest a pull and a build use. Only a digest that a registry answered is written:
a hand-copied one cannot be told from a verified one, so the file carries none of those.

The digest is the sha256 of the manifest the registry serves for the tag (for a multi-platform image
its index), read with ``skopeo inspect --raw`` or, without skopeo, from ``docker pull``'s RepoDigests.
A registry on 127.0.0.1/localhost is spoken to over plain http (Docker treats it as insecure by default).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

__all__ = ["BaseImageError", "base_keys", "pin_bases", "read_env", "resolve_digest", "split_ref"]

# Keys of bases.env that name a base image (the rest, IMAGE_REGISTRY / IMAGE_TAG, name what is built).
BASE_KEY = re.compile(r"^[A-Z][A-Z0-9_]*_(BASE|IMAGE)$")
REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._/:-]*?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


class BaseImageError(ValueError):
    """A bases file or an image reference that cannot be used, or a tag the registry did not resolve."""


def read_env(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a bases file (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key.strip()):
            raise BaseImageError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        out[key.strip()] = value.strip()
    return out


def base_keys(env: dict[str, str]) -> list[str]:
    return [k for k in env if BASE_KEY.match(k)]


def split_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@sha256:digest]`` -> (name, tag, digest). A registry port (``127.0.0.1:5000/x``) is part
    of the name, not a tag."""
    m = REF.match(ref)
    if not m or (m.group("tag") is None and m.group("digest") is None and ":" in ref.rsplit("/", 1)[-1]):
        raise BaseImageError(f"not an image reference: {ref!r}")
    return m.group("name"), m.group("tag"), m.group("digest")


def _is_local(name: str) -> bool:
    host = name.split("/", 1)[0] if "/" in name else ""
    return host.split(":")[0] in ("127.0.0.1", "localhost")


def _skopeo_digest(ref: str) -> str:
    name = ref.split("@")[0]
    cmd = ["skopeo", "inspect", "--raw", f"docker://{name}"]
    if _is_local(name):
        cmd.insert(2, "--tls-verify=false")
    out = subprocess.run(cmd, capture_output=True, timeout=300)
    if out.returncode != 0:
        raise BaseImageError(f"skopeo could not resolve {name}: {out.stderr.decode(errors='replace').strip()}")
    return "sha256:" + hashlib.sha256(out.stdout).hexdigest()


def _docker_digest(ref: str, docker: str = "docker") -> str:
    name, _, _ = split_ref(ref)
    pull = subprocess.run([docker, "pull", ref], capture_output=True, text=True, timeout=1800)
    if pull.returncode != 0:
        raise BaseImageError(f"docker could not pull {ref}: {pull.stderr.strip()}")
    out = subprocess.run([docker, "image", "inspect", "--format", "{{json .RepoDigests}}", ref],
                         capture_output=True, text=True, timeout=60)
    for rd in re.findall(r'"([^"]+)"', out.stdout):
        if rd.split("@")[0] == name:
            return rd.split("@")[1]
    raise BaseImageError(f"docker has no digest of {name} after pulling {ref} (RepoDigests: {out.stdout.strip()})")


def resolve_digest(ref: str, tool: str | None = None) -> str:
    """The registry's digest for ``ref``'s tag: with ``tool`` ``skopeo`` or ``docker`` (default: skopeo when
    installed, else docker)."""
    name, tag, _ = split_ref(ref)
    if tag is None:
        raise BaseImageError(f"{ref}: no tag to resolve (write NAME:TAG)")
    tool = tool or ("skopeo" if shutil.which("skopeo") else "docker")
    if tool == "skopeo":
        return _skopeo_digest(f"{name}:{tag}")
    if tool in ("docker", "podman") or tool.endswith(("/docker", "/podman")):
        return _docker_digest(f"{name}:{tag}", docker=tool)
    raise BaseImageError(f"unknown resolver {tool!r}: skopeo, docker or podman")


def pin_bases(path: str | Path, resolve: Callable[[str], str] = resolve_digest) -> dict[str, str]:
    """Resolve every base of the bases file ``path`` from its tag and rewrite its line as ``TAG@DIGEST``
    (comments and other lines kept). Returns {key: pinned reference}. Nothing is written unless every base
    resolved."""
    path = Path(path)
    env = read_env(path)
    keys = base_keys(env)
    if not keys:
        raise BaseImageError(f"{path}: no base images (keys ending in _BASE or _IMAGE)")
    pinned = {}
    for key in keys:
        name, tag, _ = split_ref(env[key])
        if tag is None:
            raise BaseImageError(f"{path}: {key}={env[key]} has no tag to resolve")
        digest = resolve(f"{name}:{tag}")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise BaseImageError(f"{key}: resolver answered {digest!r}, not a sha256 digest")
        pinned[key] = f"{name}:{tag}@{digest}"
    lines = []
    for line in path.read_text().splitlines():
        key = line.partition("=")[0].strip()
        lines.append(f"{key}={pinned[key]}" if key in pinned and not line.lstrip().startswith("#") else line)
    path.write_text("\n".join(lines) + "\n")
    return pinned


def main(argv: list[str] | None = None) -> int:
    """``python -m sifthinker.cluster.images pin FILE [--tool skopeo|docker|podman]`` (``make pin-bases``)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m sifthinker.cluster.images", description=main.__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    pin = sub.add_parser("pin", help="resolve each base's tag to its digest and write it into FILE")
    pin.add_argument("file")
    pin.add_argument("--tool", default=None, help="skopeo, docker or podman (default: skopeo if installed)")
    args = p.parse_args(argv)
    try:
        for key, ref in pin_bases(args.file, lambda r: resolve_digest(r, args.tool)).items():
            print(f"{key}={ref}")
    except (BaseImageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
