"""The training image's lock (images/constraints-gpu.txt, ``make lock-gpu``) against CI's pins and the bases.

Writing the lock needs PyPI (``sifthinker.cluster.gpu_lock``); these checks read the files, so a lock gone
stale after a change of constraints.txt, pyproject.toml or a base fails here, offline.
"""

import re
import tomllib
from pathlib import Path

from sifthinker.cluster.gpu_lock import canonical, read_pins, read_replaced
from sifthinker.cluster.images import read_env

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "images" / "constraints-gpu.txt"
CI = REPO / "constraints.txt"


def test_the_lock_keeps_every_ci_pin_but_the_ones_its_header_names():
    ci, lock, replaced = read_pins(CI), read_pins(LOCK), read_replaced(LOCK)
    assert replaced, "the header lists no replaced pin: vLLM 0.31 caps transformers below CI's"
    for name, (was, now) in replaced.items():
        assert ci.get(name) == was, f"{name}: the lock replaced CI's {was}, CI now pins {ci.get(name)}: make lock-gpu"
        assert lock.get(name, "absent") == now and now != was, (name, was, now)
    torch_stack = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")
    differ = {n: (ci[n], lock[n]) for n in ci.keys() & lock.keys()
              if ci[n] != lock[n] and n not in replaced and not torch_stack.match(n)}
    assert not differ, f"pins that differ from CI's without the header saying so (make lock-gpu): {differ}"


def test_the_lock_pins_the_gpu_extras_vllm_and_cis_trl():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    (vllm,) = [r for r in extra if canonical(r.split("==")[0]) == "vllm"]
    lock, ci = read_pins(LOCK), read_pins(CI)
    assert lock["vllm"] == vllm.split("==")[1].split(";")[0].strip()
    assert lock["trl"] == ci["trl"] and lock["deepspeed"] == ci["deepspeed"]


def test_the_cuda_base_has_the_cuda_major_of_both_environments_torch():
    """DeepSpeed JIT-compiles its ops with the base's nvcc and refuses a CUDA major other than torch's."""
    base = read_env(REPO / "images" / "bases.env")["CUDA_DEVEL_BASE"]
    major = re.match(r"nvidia/cuda:(\d+)\.", base)
    assert major, base
    for f in (CI, LOCK):
        runtime = read_pins(f)["nvidia-cuda-runtime"]
        assert runtime.split(".")[0] == major.group(1), (f.name, runtime, base)


def test_names_and_headers_are_read_as_pip_reads_them(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("# replaced: huggingface-hub==2.4.0 -> 1.33.0\nHuggingFace_Hub==1.33.0\nfoo[bar]==1.0 ; python_version>'3'\n")
    assert read_pins(f) == {"huggingface-hub": "1.33.0", "foo": "1.0"}
    assert read_replaced(f) == {"huggingface-hub": ("2.4.0", "1.33.0")}
    assert canonical("Zope.Interface_x") == "zope-interface-x"
