// The C++ half of fastpose.replay: a recorded sequence of dispatcher calls, run again without Python.
//
// fastpose/replay.py records what a function calls at the dispatcher (a TorchDispatchMode) and hands
// each call here as (operator, its full argument list, which arguments are earlier results, which
// results later calls read). A run pushes the stored arguments onto a stack, puts the values produced
// by this run's earlier steps in the marked places and calls the operator boxed: the same operators,
// the same arguments, in the same order as the recorded call, minus the Python between them (the
// packed HPM forward spends ~1 ms of Python on ~280 dispatcher calls per image).
//
// Values are numbered slots: the inputs first, then every tensor a step returns that was not seen
// before. A slot is dropped after its last reader (free_after), so a run holds no more activations
// than the Python function did.
#include <torch/extension.h>
#include <pybind11/complex.h>
#include <torch/csrc/jit/python/pybind_utils.h>

#include <ATen/core/dispatch/Dispatcher.h>

#include <complex>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fastpose {
namespace {

namespace py = pybind11;

// One place a slot's tensor goes into (arguments) or comes from (returns): position `pos` of the
// argument / return list, element `elem` of a tensor list there (-1: the value itself is the tensor).
struct SlotRef {
  int64_t pos, elem, slot;
};

struct Step {
  c10::OperatorHandle op;
  std::vector<c10::IValue> args;  // the full argument list; slot places hold an undefined tensor
  std::vector<SlotRef> in, out;
  std::vector<int64_t> free_after;  // slots read for the last time by this step
};

std::vector<SlotRef> slot_refs(const py::list& refs, const char* what, size_t positions, int64_t slots) {
  std::vector<SlotRef> out;
  for (const auto& r : refs) {
    const auto t = r.cast<std::tuple<int64_t, int64_t, int64_t>>();
    const SlotRef s{std::get<0>(t), std::get<1>(t), std::get<2>(t)};
    TORCH_CHECK_VALUE(s.pos >= 0 && static_cast<size_t>(s.pos) < positions && s.elem >= -1 && s.slot >= 0 &&
                          s.slot < slots,
                      "replay: bad ", what, " reference (", s.pos, ", ", s.elem, ", ", s.slot, ")");
    out.push_back(s);
  }
  return out;
}

// A copy of the tensor list (Tensor[] or Tensor?[]) tmpl with elements in[begin, end).elem set to t(i)
// (an undefined tensor: None in a Tensor?[]). A fresh list per use: IValue lists are shared by reference.
template <class T>
c10::IValue patched_list(const c10::IValue& tmpl, const std::vector<SlotRef>& in, size_t begin, size_t end, T t) {
  if (tmpl.isTensorList()) {
    c10::List<at::Tensor> l = tmpl.toTensorList().copy();
    for (size_t i = begin; i < end; ++i) l.set(in[i].elem, t(i));
    return l;
  }
  TORCH_CHECK(tmpl.isList(), "replay: a slot element in an argument that is not a list");
  c10::List<std::optional<at::Tensor>> l = c10::impl::toTypedList<std::optional<at::Tensor>>(tmpl.toList()).copy();
  for (size_t i = begin; i < end; ++i) {
    at::Tensor v = t(i);
    l.set(in[i].elem, v.defined() ? std::optional<at::Tensor>(std::move(v)) : std::nullopt);
  }
  return l;
}

// A Python number where the schema has a Tensor (t * 2 reaches the dispatcher so) becomes what
// PyTorch's argument parser makes of it: a wrapped-number scalar tensor, which type promotion treats
// as a Python scalar (float32 * 2.5 stays float32).
c10::IValue argument(const py::handle& v, const c10::TypePtr& type) {
  if (type->kind() == c10::TypeKind::TensorType && !THPVariable_Check(v.ptr())) {
    at::Scalar sc;
    if (PyBool_Check(v.ptr()))
      sc = at::Scalar(v.cast<bool>());
    else if (PyLong_Check(v.ptr()))
      sc = at::Scalar(v.cast<int64_t>());
    else if (PyFloat_Check(v.ptr()))
      sc = at::Scalar(v.cast<double>());
    else if (PyComplex_Check(v.ptr()))
      sc = at::Scalar(c10::complex<double>(v.cast<std::complex<double>>()));
    else
      return torch::jit::toIValue(v, type);
    at::Tensor t = at::scalar_tensor(sc, at::TensorOptions().dtype(sc.type()));
    t.unsafeGetTensorImpl()->set_wrapped_number(true);
    return t;
  }
  return torch::jit::toIValue(v, type);
}

class Plan {
 public:
  Plan(int64_t slots, int64_t inputs) : slots_(slots), inputs_(inputs) {
    TORCH_CHECK_VALUE(inputs >= 0 && slots >= inputs, "replay: ", slots, " slots for ", inputs, " inputs");
  }

  // args: the Python values of every schema argument, in order (tensors at slot places may be anything
  // of the argument's type; they are converted, then dropped). in / out: (position, element, slot).
  void add_step(const std::string& name, const std::string& overload, const py::list& args, const py::list& in,
                const py::list& out, const std::vector<int64_t>& free_after) {
    const auto handle = c10::Dispatcher::singleton().findSchema({name, overload});
    TORCH_CHECK_VALUE(handle.has_value(), "replay: no operator ", name, ".", overload);
    const c10::FunctionSchema& schema = handle->schema();
    const auto& formals = schema.arguments();
    TORCH_CHECK_VALUE(args.size() == formals.size(), "replay: ", name, " takes ", formals.size(), " arguments, got ",
                      args.size());
    Step s{*handle, {}, slot_refs(in, "argument", formals.size(), slots_),
           slot_refs(out, "return", schema.returns().size(), slots_), free_after};
    for (const int64_t f : free_after)
      TORCH_CHECK_VALUE(f >= 0 && f < slots_, "replay: bad slot ", f, " to free");
    s.args.reserve(formals.size());
    for (size_t i = 0; i < formals.size(); ++i) s.args.push_back(argument(args[i], formals[i].type()));
    for (size_t i = 0; i < s.in.size(); ++i) {  // drop the recorded tensors: no activations kept alive
      const SlotRef& r = s.in[i];
      c10::IValue& a = s.args[r.pos];
      a = r.elem < 0 ? c10::IValue(at::Tensor()) : patched_list(a, s.in, i, i + 1, [](size_t) { return at::Tensor(); });
    }
    steps_.push_back(std::move(s));
  }

  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs, const std::vector<int64_t>& result_slots) const {
    TORCH_CHECK_VALUE(static_cast<int64_t>(inputs.size()) == inputs_, "replay: expected ", inputs_,
                      " input tensors, got ", inputs.size());
    c10::AutoGradMode no_grad(false);  // recorded under no_grad: the steps are below autograd
    std::vector<c10::IValue> values(slots_);
    for (int64_t i = 0; i < inputs_; ++i) values[i] = inputs[i];
    std::vector<c10::IValue> stack;
    for (const Step& s : steps_) {
      stack.assign(s.args.begin(), s.args.end());
      for (size_t i = 0; i < s.in.size();) {
        const SlotRef& r = s.in[i];
        if (r.elem < 0) {
          stack[r.pos] = values[r.slot];
          ++i;
          continue;
        }
        size_t j = i;
        while (j < s.in.size() && s.in[j].pos == r.pos && s.in[j].elem >= 0) ++j;
        stack[r.pos] = patched_list(s.args[r.pos], s.in, i, j, [&](size_t k) { return values[s.in[k].slot].toTensor(); });
        i = j;
      }
      s.op.callBoxed(&stack);
      for (const SlotRef& r : s.out) {
        TORCH_CHECK(static_cast<size_t>(r.pos) < stack.size(), "replay: ", s.op.schema().name(), " returned ",
                    stack.size(), " values");
        const c10::IValue& v = stack[r.pos];
        values[r.slot] = r.elem < 0 ? v : c10::IValue(v.toTensorList().get(r.elem));
      }
      for (const int64_t f : s.free_after) values[f] = c10::IValue();
    }
    std::vector<at::Tensor> out;
    out.reserve(result_slots.size());
    for (const int64_t r : result_slots) {
      TORCH_CHECK_VALUE(r >= 0 && r < slots_ && values[r].isTensor(), "replay: result slot ", r, " holds no tensor");
      out.push_back(values[r].toTensor());
    }
    return out;
  }

  int64_t steps() const { return static_cast<int64_t>(steps_.size()); }

 private:
  int64_t slots_, inputs_;
  std::vector<Step> steps_;
};

}  // namespace

void bind_replay(py::module_& m) {
  py::class_<Plan>(m, "ReplayPlan", "A recorded sequence of dispatcher calls (see fastpose.replay).")
      .def(py::init<int64_t, int64_t>(), py::arg("slots"), py::arg("inputs"))
      .def("add_step", &Plan::add_step, py::arg("name"), py::arg("overload"), py::arg("args"), py::arg("inputs"),
           py::arg("outputs"), py::arg("free_after"))
      .def("run", &Plan::run, py::arg("inputs"), py::arg("result_slots"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("steps", &Plan::steps);
}

}  // namespace fastpose
