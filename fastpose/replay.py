"""Replay of a recorded inference function without Python: a CPU counterpart of CUDA graphs.

A batch-1 forward of a small network spends much of its time in Python between the kernels: the
packed binary HPM hourglass makes ~280 dispatcher calls per image, and its Python (module traversal,
argument building, cache checks) costs ~1 ms at one thread and more than that, relatively, at two, where
it does not shrink. ``capture`` runs a function once under a recorder that sees every call it makes at
PyTorch's dispatcher, and returns a callable that makes the same calls again from C++::

    import fastpose
    model = fastpose.nn.pack(fastpose.models.create("binary_hpm_hourglass", stacks=1)).eval()
    x = torch.randn(1, 3, 256, 256)
    fwd = fastpose.replay.capture(model, x)   # runs model(x) twice: a warm-up, then the recording
    heatmaps = fwd(torch.randn(1, 3, 256, 256))   # the same ops, same order, same kernels: same bits

What a replay is, exactly: the recorded operators with the recorded arguments, except that every tensor
the function computed is this run's value (the inputs are the new inputs). So

- it is specialised to the inputs' sizes, strides, dtype and device (a different input raises
  ``ValueError``; capture again for it), and to every decision the Python code made while recording
  (branches on shapes, module attributes, ``torch.get_num_threads()`` read in Python; the kernels' own
  thread count is read when they run);
- it is a snapshot of the model: the tensors the function read but did not compute (weights, folded
  BatchNorms, cached packed filters) are held as they were; in-place writes to those very tensors
  show, but what the Python code would re-derive after a change (a new packed filter, a replaced
  parameter) does not: capture again after changing the model, as with CUDA graphs;
- the function is recorded on copies of the example inputs (same strides; the examples are not
  modified), so an example passed twice, or also read by the function as a constant, is still an
  input of its own; tensors it makes from Python data (``torch.tensor``) are copied anew in each run;
- only dispatcher calls are replayed: the function's Python side effects (module hooks, prints,
  appends to a list, counters) happen at capture and never again;
- it runs with autograd off (the recording does too): inference only;
- results may be tensors in nested tuples, lists and dicts, with other values kept as recorded; every
  tensor it returns is newly allocated by the run that returns it (as the function's own outputs would
  be), unless the function returned an input or a tensor it did not compute;
- functions whose control flow depends on tensor values cannot be recorded: an operator that returns
  a Python number or bool (``.item()``, ``torch.equal``, ``bool(t)``), a host read (``.tolist()``,
  ``.numpy()``, ``tensor_split`` at a tensor of indices) or an output whose size depends on the data
  (``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``, ``repeat_interleave`` by a tensor,
  ``bincount``) raises ``ValueError`` at capture. Other value-dependent control flow is not detected.
  Random-number operators draw new numbers in each run.

The caching allocator's ``inference_scope`` (fastpose.cpu_allocator) is entered around each run, as the
packed models' own forward does. The GIL is released while the steps run.
"""
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from . import _C
from .cpu_allocator import inference_scope

__all__ = ["Replay", "capture"]

# Operators whose result decides Python control flow or whose output size is data-dependent.
_DATA_DEPENDENT = {"nonzero", "masked_select", "bincount", "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim",
                   "unique_dim_consecutive", "nonzero_numpy", "argwhere", "_local_scalar_dense", "equal",
                   "is_nonzero", "item"}
# Overloads that read a tensor argument's values on the host (split points, a start index).
_DATA_DEPENDENT_OVERLOADS = {("narrow", "Tensor")}
# Pure views: with only recorded-constant tensor arguments they are evaluated once, at capture.
_FOLDABLE_VIEWS = {"aten::detach", "aten::alias", "aten::slice", "aten::view", "aten::t", "aten::permute",
                   "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::select", "aten::as_strided",
                   "aten::transpose", "aten::_reshape_alias"}

_METADATA_INPLACE = {"aten::resize_", "aten::resize_as_", "aten::as_strided_", "aten::set_", "aten::squeeze_",
                     "aten::unsqueeze_", "aten::transpose_", "aten::t_", "aten::swapdims_", "aten::swapaxes_",
                     "aten::detach_"}


# Reads of tensor values that never reach the dispatcher: the Python-level calls are refused while
# recording (a TorchFunctionMode, thread-local like the dispatch mode).
_HOST_READS = {"tolist", "numpy", "__array__"}


class _HostReadGuard(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _HOST_READS or (name == "tensor_split" and isinstance(
                args[1] if len(args) > 1 else kwargs.get("indices_or_sections", kwargs.get("tensor_indices_or_sections")),
                torch.Tensor)):
            raise ValueError(f"replay.capture: {name}() reads tensor values on the host; such a function cannot be "
                             "replayed")
        return func(*args, **kwargs)


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        if name in _DATA_DEPENDENT or (name, func._overloadname) in _DATA_DEPENDENT_OVERLOADS or (
                name == "repeat_interleave" and func._overloadname != "self_int") or (name == "index" and any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1])):
            raise ValueError(f"replay.capture: {func} depends on tensor values (its result is a Python value or "
                             "has a data-dependent size); such a function cannot be replayed")
        out = func(*args, **kwargs)
        if name in ("lift_fresh", "lift"):
            # torch.tensor(data): the finished tensor, lifted unchanged; its value now (the function may
            # modify it later) is what each run starts from
            args = (args[0].clone(),)
        for r in func._schema.returns:
            if not isinstance(r.type, (torch.TensorType, torch.ListType, torch.TupleType, torch.OptionalType)):
                raise ValueError(f"replay.capture: {func} returns a {r.type}, which Python code may branch on; "
                                 "such a function cannot be replayed")
        self.calls.append((func, args, kwargs, out))
        return out


def _full_args(func, args, kwargs):
    # Every schema argument by position (defaults filled in), as the C++ plan stores them.
    vals = []
    for i, a in enumerate(func._schema.arguments):
        if i < len(args) and not a.kwarg_only:
            vals.append(args[i])
        elif a.name in kwargs:
            vals.append(kwargs[a.name])
        elif a.has_default_value():
            vals.append(a.default_value)
        else:
            raise ValueError(f"replay.capture: {func} was called without its argument {a.name}")
    return vals


class Replay:
    """The callable ``capture`` returns: ``replay(*inputs)`` runs the recorded calls on new inputs of the
    example inputs' sizes, strides, dtype and device and returns what the function returned."""

    def __init__(self, plan, signature, result_spec, result_leaves, scope_device, num_calls):
        self._plan = plan
        self._signature = signature
        self._spec = result_spec
        self._leaves = result_leaves  # ("slot", i) or ("const", value)
        self._slots = [v for k, v in result_leaves if k == "slot"]
        self._device = scope_device
        self.recorded_calls = num_calls  # dispatcher calls the function made
        self.steps = plan.steps          # of which run at each replay (views of constants folded)

    def __repr__(self):
        ins = ", ".join(f"{tuple(sh)} {str(dt).replace('torch.', '')} {dev}" for sh, _, dt, dev in self._signature)
        return f"Replay({self.steps} steps of {self.recorded_calls} recorded calls; inputs: {ins})"

    def __call__(self, *inputs):
        if len(inputs) != len(self._signature):
            raise TypeError(f"replay: expected {len(self._signature)} input tensors, got {len(inputs)}")
        for i, (t, sig) in enumerate(zip(inputs, self._signature)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"replay: input {i} must be a tensor, got {type(t).__name__}")
            if (t.shape, t.stride(), t.dtype, t.device) != sig:
                raise ValueError(f"replay: input {i} must have the recorded shape {tuple(sig[0])}, strides {sig[1]}, "
                                 f"dtype {sig[2]} and device {sig[3]}; got {tuple(t.shape)}, {t.stride()}, {t.dtype}, "
                                 f"{t.device} (capture again for this input)")
        with inference_scope(self._device):
            vals = iter(self._plan.run(list(inputs), self._slots))
        leaves = [next(vals) if k == "slot" else v for k, v in self._leaves]
        return pytree.tree_unflatten(leaves, self._spec)


def capture(fn, *example_inputs, warmup=1):
    """Record ``fn(*example_inputs)`` (positional tensors; autograd off) and return a ``Replay`` of it.

    ``fn`` runs ``warmup`` times first (default 1) so that what it builds lazily (cached packed weights,
    folded BatchNorms, per-block plans) exists before the recording; the recorded run's result is
    discarded. See the module docstring for what a replay keeps and what it cannot record.
    """
    if not callable(fn):
        raise TypeError(f"replay.capture: fn must be callable, got {type(fn).__name__}")
    if not example_inputs:
        raise ValueError("replay.capture: needs at least one example input tensor")
    for i, t in enumerate(example_inputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"replay.capture: example input {i} must be a tensor, got {type(t).__name__}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"replay.capture: warmup must be an int >= 0, got {warmup!r}")
    devices = {t.device for t in example_inputs}
    device = next(iter(devices)) if len(devices) == 1 else torch.device("cpu")
    signature = [(t.shape, t.stride(), t.dtype, t.device) for t in example_inputs]
    with torch.no_grad():
        # The function runs on copies with the same strides: the example tensors are not modified, and an
        # example given twice, or also read by the function as a constant, is still its own input.
        inputs = [_strided_copy(t, i) for i, t in enumerate(example_inputs)]
        for _ in range(warmup):
            fn(*inputs)
        inputs = [_strided_copy(t, i) for i, t in enumerate(example_inputs)]
        rec = _Recorder()
        with _HostReadGuard(), rec:
            result = fn(*inputs)
    return _build(rec.calls, inputs, result, device, signature)


def _strided_copy(t, i):
    if t.numel() > 1 and torch._debug_has_internal_overlap(t) != 0:
        raise ValueError(f"replay.capture: example input {i} has overlapping memory (an expand or a stride of 0): "
                         "pass a dense tensor")
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t)


def _build(calls, inputs, result, device, signature):
    # (ids stay unique: `calls` and `inputs` hold every recorded tensor until the plan is built)
    slot_of = {}    # id(tensor) -> slot, for the inputs and every tensor a kept step returned
    tensor_of = {}  # slot -> the recorded tensor (its sizes and strides at the end of the recording)
    for i, t in enumerate(inputs):
        slot_of[id(t)] = i
        tensor_of[i] = t
    nslots = len(inputs)
    # An op that changes a tensor's own sizes or strides in place would tell an alias from its base.
    alias_ok = not any(func._schema.name in _METADATA_INPLACE for func, *_ in calls)
    steps = []  # (func, full args, in refs, out refs)
    for func, args, kwargs, out in calls:
        full = _full_args(func, args, kwargs)
        refs = []
        for pos, a in enumerate(full):
            if isinstance(a, torch.Tensor) and id(a) in slot_of:
                refs.append((pos, -1, slot_of[id(a)]))
            elif isinstance(a, (list, tuple)):
                refs.extend((pos, e, slot_of[id(v)]) for e, v in enumerate(a)
                            if isinstance(v, torch.Tensor) and id(v) in slot_of)
        rets = out if isinstance(out, (tuple, list)) and len(func._schema.returns) > 1 else (out,)
        if not refs and func._schema.name in _FOLDABLE_VIEWS:
            continue  # a view of constants: the recorded result is the value every run would compute
        if (alias_ok and func._schema.name in ("aten::detach", "aten::alias") and len(refs) == 1
                and refs[0][2] >= len(inputs) and isinstance(out, torch.Tensor)
                and _same_view(out, tensor_of[refs[0][2]])):
            # A computed tensor's detached alias (the recorder sees one per torch.empty): under no_grad
            # it is that tensor, so the run passes the tensor itself on. (Unless one of the two was
            # resized or restrided later, e.g. inside an out= kernel: then they differ at the end.)
            slot_of[id(out)] = refs[0][2]
            continue
        if func._schema.name in ("aten::lift_fresh", "aten::lift") and not refs:
            # torch.tensor(data) inside the function: the recorder sees the finished tensor lifted, which
            # returns it unchanged; each run must get a tensor of its own, so the run copies it.
            func, full = torch.ops.aten.clone.default, [full[0], None]
        outs = []
        for pos, r in enumerate(rets):
            items = [(-1, r)] if isinstance(r, torch.Tensor) else (
                list(enumerate(r)) if isinstance(r, (list, tuple)) else [])
            for e, t in items:
                if isinstance(t, torch.Tensor) and id(t) not in slot_of:
                    slot_of[id(t)] = nslots
                    tensor_of[nslots] = t
                    outs.append((pos, e, nslots))
                    nslots += 1
        steps.append((func, full, refs, outs))
    leaves, spec = pytree.tree_flatten(result, is_leaf=lambda v: isinstance(v, torch.Size))
    result_leaves = [("slot", slot_of[id(v)]) if isinstance(v, torch.Tensor) and id(v) in slot_of else ("const", v)
                     for v in leaves]
    # Last reader of each slot: it is dropped after that step (results are kept to the end).
    last = {}
    for k, (_, _, refs, outs) in enumerate(steps):
        for _, _, s in outs:
            last.setdefault(s, k)
        for _, _, s in refs:
            last[s] = k
    for k, s in result_leaves:
        if k == "slot":
            last[s] = len(steps)
    free_after = [[] for _ in steps]
    for s, k in last.items():
        if k < len(steps) and s >= len(inputs):
            free_after[k].append(s)
    plan = _C.ReplayPlan(nslots, len(inputs))
    for (func, full, refs, outs), free in zip(steps, free_after):
        plan.add_step(func._schema.name, func._schema.overload_name, full, sorted(refs), outs, free)
    return Replay(plan, signature, spec, result_leaves, device, len(calls))


def _same_view(a, b):
    return a.shape == b.shape and a.stride() == b.stride() and a.storage_offset() == b.storage_offset()
