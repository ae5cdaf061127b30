// Every op schema of fastpose, in one place. Kernels register per device in csrc/cpu and csrc/cuda
// (Triton kernels from Python); fake and autograd registrations live in fastpose/ops/.
// Backward passes are ops of their own so that torch.compile and opcheck see them.
#include <torch/library.h>

TORCH_LIBRARY(fastpose, m) {
  // ---- fused softmax + DSNT (fastpose/ops/softmax_dsnt.py) ----
  // stats: (B, J, 4) float32 (float64 for float64 logits), per map a reference r (the max logit, or
  // within 30 below it), the sum of exp(logit - r) and the two coordinates: all the backward needs
  // besides the logits.
  m.def("softmax_dsnt(Tensor logits) -> (Tensor coords, Tensor stats)");
  m.def("softmax_dsnt_backward(Tensor grad_coords, Tensor logits, Tensor stats) -> Tensor");
  // reg: 1 = KL(p || q), 2 = JS(p, q), q dsntnn's normalised Gaussian at target (normalised (x, y))
  // with standard deviation sigma in pixels. divergence: (B, J).
  m.def(
      "softmax_dsnt_reg(Tensor logits, Tensor target, float sigma, int reg) -> "
      "(Tensor coords, Tensor divergence, Tensor stats)");
  m.def(
      "softmax_dsnt_reg_backward(Tensor grad_coords, Tensor grad_divergence, Tensor logits, Tensor target, "
      "Tensor stats, float sigma, int reg) -> Tensor");

  // ---- XNOR-popcount binary convolution (fastpose/ops/xnor_conv.py) ----

  // ---- nearest upsample + add, HRNet fusion (fastpose/ops/upsample_add.py, hr_fuse.py) ----
  // CPU kernels in C++; the CUDA kernels are Triton (triton_kernels/), registered from Python.
  // Integer scale factors only; the output takes skip's (xs[0]'s) memory format.
  m.def("upsample_add(Tensor low, Tensor skip) -> Tensor");
  m.def("upsample_add_backward(Tensor grad, Tensor low) -> Tensor");  // grad of low; skip's is grad
  // No default for relu: torch drops arguments equal to their default before autograd, which
  // breaks register_autograd's structure check for Tensor[] ops.
  m.def("hr_fuse(Tensor[] xs, bool relu) -> Tensor");
  m.def("hr_fuse_backward(Tensor grad, Tensor out, Tensor[] xs, bool relu) -> Tensor[]");
}
