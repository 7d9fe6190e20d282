"""The GPU architectures the CUDA extension is built for where the build machine shows no GPU
(TORCH_CUDA_ARCH_LIST's default in setup.py; with a GPU, torch targets the GPUs it sees):
A100 and H100, the GPUs this project is run on, rather than every architecture torch was built
for (a long nvcc run in every CI build).  Written here only: setup.py reads it, and
tests/test_gpu_code.py checks the built library against what torch makes of it."""

WITHOUT_A_GPU = "8.0;9.0"
