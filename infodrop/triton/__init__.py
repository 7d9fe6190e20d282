"""The Triton backend: the fused op as Triton kernels, for GPUs where the CUDA extension is not
built (or backend="triton"), and on the CPU under TRITON_INTERPRET=1 for tests.  Importing this
package needs triton; infodrop.backends() says whether it can run."""
