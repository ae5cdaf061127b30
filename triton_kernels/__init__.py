"""Triton kernels of fastpose (installed as fastpose.triton_kernels), one file per kernel with its launcher."""
