"""Builds infodrop's compiled backends: infodrop._C (schemas + CPU kernels) always, and
infodrop._C_cuda (the CUDA kernels) where the installed torch has CUDA and nvcc is found.

INFODROP_CUDA=0 skips the CUDA extension, INFODROP_CUDA=1 makes a missing toolkit an error.
"""

import glob
import os
import re
import runpy

HERE = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    """CUDA_HOME, else /usr/local/cuda, where bin/nvcc exists.  Set before torch's extension
    helpers are imported: they fix CUDA_HOME at import time, and guessing it from an nvcc
    wrapper on PATH (/usr/local/bin) gives a directory without the CUDA runtime library."""
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return home
    return None


CUDA_HOME = _find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def version():
    """infodrop/_version.py is the one place the version is written (read, not imported: the
    package cannot be imported before its extensions are built)."""
    with open(os.path.join(HERE, "infodrop", "_version.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


# What the library needs is torch alone.  The extras: "paper" for the paper's application
# (python -m infodrop train, experiments/), "models" for converting torchvision/timm networks
# (infodrop.convert needs neither: the tests and the network benchmark build them), "bench" for
# the pytest-benchmark suite, "test" for make test.  torchvision must be the release that matches
# torch (0.29.x for torch 2.14, 0.26.x for 2.11; requirements.txt and requirements-torch2.11.txt
# pin them); pip resolves that from its own pin.
MODELS = ["torchvision", "timm"]
EXTRAS = {
    "paper": ["numpy", "matplotlib", "scikit-learn", "tqdm"],
    "models": MODELS,
    "bench": ["pytest", "pytest-benchmark"] + MODELS,
    "test": ["pytest", "pytest-benchmark", "expecttest", "hypothesis", "ruff", "numpy", "onnx",
             "onnxscript", "onnxruntime"] + MODELS,
}
EXTRAS["all"] = sorted({name for names in EXTRAS.values() for name in names})


def cpu_extension():
    sources = (["csrc/ops.cpp", "csrc/autograd.cpp", "csrc/autocast.cpp", "csrc/bindings.cpp"]
               + sorted(glob.glob("csrc/cpu/*.cpp")))
    # -O3 and OpenMP: at::parallel_for runs on one thread without -fopenmp.  No -march: the
    # ISA-specific files raise their own target, so the module runs on any x86-64 CPU.
    flags = ["-O3", "-fopenmp", "-fno-math-errno", "-Wall", "-Wno-unknown-pragmas"]
    return CppExtension(
        "infodrop._C",
        sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_compile_args={"cxx": flags},
        extra_link_args=["-fopenmp"],
    )


def want_cuda():
    forced = os.environ.get("INFODROP_CUDA")
    if forced not in (None, "", "0", "1"):
        raise SystemExit(f"INFODROP_CUDA must be 0 or 1, got {forced!r}")
    if forced == "0":
        return False
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if forced == "1" and not possible:
        raise SystemExit("INFODROP_CUDA=1 but torch has no CUDA "
                         f"(torch.version.cuda={torch.version.cuda}) or no nvcc was found "
                         "(looked in $CUDA_HOME/bin and /usr/local/cuda/bin)")
    return possible


def cuda_extension():
    # Without a visible GPU torch would target every architecture it was built for (a long
    # nvcc run in every CI build): the list infodrop/_cuda_archs.py gives (run, not imported as
    # part of the package, which cannot be imported before its extensions are built).
    if not torch.cuda.is_available():
        archs = runpy.run_path(os.path.join(HERE, "infodrop", "_cuda_archs.py"))["WITHOUT_A_GPU"]
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", archs)
    # No --use_fast_math: the shared math states its own error bounds (csrc/infodrop/
    # fastmath.h) and must not have its divisions and square roots approximated again.
    return CUDAExtension(
        "infodrop._C_cuda",
        ["csrc/cuda/ops_cuda.cpp", "csrc/cuda/kernels.cu"],
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_compile_args={"cxx": ["-O3", "-Wall"], "nvcc": ["-O3"]},
    )


setup(
    name="infodrop",
    version=version(),
    description="Fused Information Dropout (Achille & Soatto) for PyTorch",
    packages=find_packages(include=["infodrop", "infodrop.*"]),
    ext_modules=[cpu_extension()] + ([cuda_extension()] if want_cuda() else []),
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    # the oldest torch make test runs the suite on (make test-torch2.11); 2.14.1 is the newest
    install_requires=["torch>=2.11"],
    extras_require=EXTRAS,
)
