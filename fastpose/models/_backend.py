"""One switch between fastpose kernels and plain PyTorch ops for a whole model."""
BACKENDS = ("fastpose", "torch")


def set_backend(model, backend):
    """Route every fastpose layer of `model` through its kernels ("fastpose") or through the plain
    PyTorch expression ("torch"): same modules, same weights. Returns the model."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for m in model.modules():
        if hasattr(m, "use_reference"):
            m.use_reference = backend == "torch"
    model.backend = backend
    return model
