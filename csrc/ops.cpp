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
  // Packed bits: int64 words (N, H, W, ceil(C / 64)), bit b of word k = channel 64 k + b, 1 = +1 (x >= 0),
  // channels >= C zero. Weights pack the same way to (Cout, KH, KW, ceil(Cin / 64)).
  m.def("binarize_pack(Tensor x) -> Tensor");
  // out = conv2d(sign(x), sign(w)) * alpha + bias, alpha = mean|w| per output channel (scale) or 1;
  // pad_value 0 (border taps contribute nothing) or -1 (border taps read as -1).
  m.def(
      "xnor_conv2d(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, "
      "bool scale, int pad_value) -> Tensor");
  // x: float (N, Cin, H, W) (output in its dtype) or packed int64 (N, H, W, words) (float32 output),
  // unless out_dtype says otherwise. Optional folded BatchNorm after alpha and bias:
  // v = v * bn_scale + bn_shift. channels_last: NHWC output (else x's layout; NCHW for packed x).
  m.def(
      "xnor_conv2d_packed(Tensor x, Tensor weight_packed, Tensor? alpha, Tensor? bias, int in_channels, "
      "int[2] stride, int[2] padding, int[2] dilation, int pad_value, Tensor? bn_scale=None, "
      "Tensor? bn_shift=None, ScalarType? out_dtype=None, bool channels_last=False) -> Tensor");
  // One convolution of a packed binary stage, written in place (inference; see xnor_conv.py):
  // x float (packed as sign(x * in_scale + in_shift), or sign(x)) or packed int64; v = conv * alpha + bias
  // in out's dtype; out (any strides, e.g. a channel slice) = v + residual; out_packed = packed
  // sign(v * next_scale + next_shift), the next binary layer's input. Every multiply / add rounds once.
  // up_residual (half size): out = (v + residual) + up_residual[.., oh / 2, ow / 2] (an hourglass merge).
  // pool: out = avg_pool2d(that, 2, 2) instead (ATen's summation order), out_packed unchanged.
  m.def(
      "xnor_conv2d_fused(Tensor x, Tensor weight_packed, Tensor? alpha, Tensor? bias, int in_channels, "
      "int[2] stride, int[2] padding, int[2] dilation, int pad_value, Tensor? in_scale, Tensor? in_shift, "
      "Tensor? residual, Tensor? next_scale, Tensor? next_shift, Tensor(a!) out, Tensor(b!)? out_packed, "
      "bool pool=False, Tensor? up_residual=None) -> ()");
  // Straight-through backward (composite of ATen ops): grads of (x, weight, bias); the ones not asked
  // for in output_mask come back empty.
  m.def(
      "xnor_conv2d_backward(Tensor grad, Tensor x, Tensor weight, int[2] stride, int[2] padding, "
      "int[2] dilation, bool scale, int pad_value, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // The fused CPU form of that backward: x enters as the two bit planes the forward's autograd saves,
  // xnor_ste_pack(x) = (sign bits (x >= 0), pass bits (|x| <= 1)), both packed like binarize_pack.
  m.def("xnor_ste_pack(Tensor x) -> (Tensor, Tensor)");
  m.def(
      "xnor_conv2d_backward_packed(Tensor grad, Tensor x_sign, Tensor x_pass, Tensor weight, int[2] stride, "
      "int[2] padding, int[2] dilation, bool scale, int pad_value, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // ---- per-channel affine + ReLU (+ 2x2 average pool), one pass (fastpose/ops/affine_relu.py) ----
  // v = relu((x * scale[c]) + shift[c]) (two roundings); pool: (((0 + v00) + v01) + v10) + v11) / 4, the
  // order of avg_pool2d(2, 2) (an odd last row / column dropped). Output in x's memory format.
  m.def("affine_relu(Tensor x, Tensor scale, Tensor shift, bool pool) -> Tensor");

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
