"""Builds infodrop's compiled backends: infodrop._C (schemas + CPU kernels) always."""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_extension():
    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
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


setup(
    name="infodrop",
    version="0.1.0",
    description="Fused Information Dropout (Achille & Soatto) for PyTorch",
    packages=find_packages(include=["infodrop", "infodrop.*"]),
    ext_modules=[cpu_extension()],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
)
