// Autograd of fastpose::xnor_conv2d in C++ (as softmax_dsnt's): the Python layer of
// torch.library.register_autograd cost ~60 us per forward and ~40 us per backward of every XNOR layer
// in a training step, more than the kernels of the small ones.
//
// On the CPU (float32 / float64) the forward saves the two bit planes of x (xnor_ste_pack: its sign and
// its |x| <= 1 window) instead of x, and the backward is the fused xnor_conv2d_backward_packed. A graph
// of the backward itself (create_graph=True), a gradient of another dtype, and other devices take the
// composite xnor_conv2d_backward: on x, or on a stand-in with x's signs and window (+-0.5 inside, +-2
// outside), which is all the straight-through backward depends on.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace fastpose {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_forward(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool scale,
                        int64_t pad_value) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpose::xnor_conv2d", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                                         at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool, int64_t)>();
  return op.call(x, w, bias, stride, padding, dilation, scale, pad_value);
}

std::tuple<at::Tensor, at::Tensor> call_ste_pack(const at::Tensor& x) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpose::xnor_ste_pack", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&)>();
  return op.call(x);
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

Grads call_backward_packed(const at::Tensor& grad, const at::Tensor& sign, const at::Tensor& pass,
                           const at::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation, bool scale, int64_t pad_value, std::array<bool, 3> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpose::xnor_conv2d_backward_packed", "")
                       .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool, int64_t,
                                    std::array<bool, 3>)>();
  return op.call(grad, sign, pass, w, stride, padding, dilation, scale, pad_value, mask);
}

Grads call_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                    at::IntArrayRef padding, at::IntArrayRef dilation, bool scale, int64_t pad_value,
                    std::array<bool, 3> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastpose::xnor_conv2d_backward", "")
                       .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                    at::IntArrayRef, at::IntArrayRef, bool, int64_t, std::array<bool, 3>)>();
  return op.call(grad, x, w, stride, padding, dilation, scale, pad_value, mask);
}

// +-1 (N, C, H, W) in dtype from packed bits (N, H, W, words): the inverse of binarize_pack.
at::Tensor unpack_pm1(const at::Tensor& packed, int64_t C, at::ScalarType dtype) {
  const int64_t N = packed.size(0), H = packed.size(1), W = packed.size(2), CW = packed.size(3);
  const at::Tensor shifts = at::arange(64, packed.options());
  const at::Tensor bits = packed.unsqueeze(-1).bitwise_right_shift(shifts).bitwise_and(1);
  return bits.reshape({N, H, W, CW * 64}).slice(3, 0, C).permute({0, 3, 1, 2}).to(dtype).mul(2).sub(1).contiguous();
}

bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
}

class XnorConv2d : public torch::autograd::Function<XnorConv2d> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, bool scale, int64_t pad_value) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = call_forward(x, weight, bias, stride, padding, dilation, scale, pad_value);
    const auto dt = x.scalar_type();
    const bool fused = x.device().is_cpu() && (dt == at::kFloat || dt == at::kDouble) &&
                       (x.requires_grad() || weight.requires_grad());
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["pad_value"] = pad_value;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->saved_data["fused"] = fused;
    if (fused) {
      auto [sign, pass] = call_ste_pack(x);
      ctx->saved_data["x_dtype"] = static_cast<int64_t>(dt);
      ctx->saved_data["x_channels_last"] = is_channels_last(x);
      ctx->save_for_backward({sign, pass, weight});
    } else {
      ctx->save_for_backward({x, weight});
    }
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = grads[0];
    const std::vector<int64_t> stride = ctx->saved_data["stride"].toIntVector();
    const std::vector<int64_t> padding = ctx->saved_data["padding"].toIntVector();
    const std::vector<int64_t> dilation = ctx->saved_data["dilation"].toIntVector();
    const bool scale = ctx->saved_data["scale"].toBool();
    const int64_t pad_value = ctx->saved_data["pad_value"].toInt();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)};
    variable_list out(8);
    if (!grad.defined() || !(mask[0] || mask[1] || mask[2])) return out;
    Grads g;
    if (ctx->saved_data["fused"].toBool()) {
      const at::Tensor &sign = saved[0], &pass = saved[1], &weight = saved[2];
      const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
      if (!at::GradMode::is_enabled() && grad.scalar_type() == x_dtype) {
        g = call_backward_packed(grad, sign, pass, weight, stride, padding, dilation, scale, pad_value, mask);
      } else {
        const int64_t C = weight.size(1);
        at::Tensor x = unpack_pm1(sign, C, x_dtype).mul(unpack_pm1(pass, C, x_dtype).mul(-0.75).add(1.25));
        if (ctx->saved_data["x_channels_last"].toBool()) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        g = call_backward(grad.contiguous(), x, weight, stride, padding, dilation, scale, pad_value, mask);
      }
    } else {
      g = call_backward(grad.contiguous(), saved[0], saved[1], stride, padding, dilation, scale, pad_value, mask);
    }
    if (mask[0]) out[0] = std::get<0>(g);
    if (mask[1]) out[1] = std::get<1>(g);
    if (mask[2]) out[2] = std::get<2>(g);
    return out;
  }
};

at::Tensor xnor_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool scale,
                                int64_t pad_value) {
  const bool grad = at::GradMode::is_enabled() &&
                    (x.requires_grad() || weight.requires_grad() || (bias.has_value() && bias->requires_grad()));
  if (!grad) {  // nothing to save: no bit planes packed for a backward that never runs
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_forward(x, weight, bias, stride, padding, dilation, scale, pad_value);
  }
  return XnorConv2d::apply(x, weight, bias, stride, padding, dilation, scale, pad_value);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastpose, Autograd, m) { m.impl("xnor_conv2d", &xnor_conv2d_autograd); }

}  // namespace fastpose
