"""Run a suite on PyTorch's lazy tensor device: a second device on a machine without a GPU.

``python -m tests.lazy_device SUITE CACHE RESULTS RUN_ID`` (from the checkout's root).

The lazy backend (``torch._lazy``, TorchScript executing on the CPU) keeps its tensors apart from
CPU tensors: an op that mixes them raises "Input tensor is not a lazy tensor", as a CUDA op
given a CPU tensor does. A suite run on it therefore finds every tensor, model and generator the
code forgot to put on the run's device, the check the CUDA path needs, here on 2 CPU cores.

The backend itself needs five things that are not about the harness, patched here and only
here, in this process: ``torch.inference_mode`` runs as ``no_grad`` (inference tensors skip the
functionalisation its views need); unpacking, ``split``, ``chunk`` and ``unbind`` of a lazy
tensor are slices of it (the backend's multi-output views are broken: two halves of a ``split``
added together come out as a CPU tensor); a lazy tensor times or over a Python float takes the float as a 0-d tensor of
its own dtype (the backend makes it a double, and the backward of ``0.01 * loss`` then fails
with "expected scalar type Float but found Double"); fvcore counts FLOPs on a CPU copy of the module (the tracer asserts on lazy
tensors; the FLOPs do not depend on the device, and the copy is made only after checking that
the inputs were put where the module is); and every optimiser step cuts the lazy graph
(``mark_step``, as XLA training loops do), or the graph of all steps would grow without end.
"""

from __future__ import annotations

import copy
import sys


def install() -> None:
    """Patch the five backend gaps above and start the lazy backend."""
    import fvcore.nn
    import torch
    import torch._lazy
    import torch._lazy.ts_backend

    torch.inference_mode = lambda mode=True: torch.no_grad()
    unpack, split, chunk, unbind = torch.Tensor.__iter__, torch.Tensor.split, torch.Tensor.chunk, torch.Tensor.unbind

    def pieces(t, sizes, dim):
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return tuple(t.narrow(dim, s, n) for s, n in zip(starts, sizes, strict=True))

    def split_lazy(self, size, dim=0):
        if self.device.type != "lazy":
            return split(self, size, dim)
        n = self.shape[dim]
        sizes = list(size) if not isinstance(size, int) else [min(size, n - s) for s in range(0, n, size)]
        return pieces(self, sizes, dim)

    def chunk_lazy(self, chunks, dim=0):
        if self.device.type != "lazy":
            return chunk(self, chunks, dim)
        return split_lazy(self, -(-self.shape[dim] // chunks), dim)

    def unbind_lazy(self, dim=0):
        return unbind(self, dim) if self.device.type != "lazy" else tuple(t.squeeze(dim) for t in split_lazy(self, 1, dim))

    torch.Tensor.split, torch.Tensor.chunk, torch.Tensor.unbind = split_lazy, chunk_lazy, unbind_lazy
    torch.Tensor.__iter__ = lambda self: iter(unbind_lazy(self)) if self.device.type == "lazy" else unpack(self)

    def scalar_as_tensor(op):
        def call(self, other):
            if isinstance(other, float) and self.device.type == "lazy":
                other = torch.tensor(other, dtype=self.dtype, device=self.device)
            return op(self, other)
        return call

    for name in ("__mul__", "__rmul__", "__truediv__"):
        setattr(torch.Tensor, name, scalar_as_tensor(getattr(torch.Tensor, name)))

    init = fvcore.nn.FlopCountAnalysis.__init__

    def on_cpu(self, model, inputs):
        where = {t.device for t in [*model.parameters(), *model.buffers()][:1]} or {torch.device("cpu")}
        stray = [str(x.device) for x in inputs if x.device not in where]
        if stray:
            raise RuntimeError(f"FLOPs counted with inputs on {stray}, the module on {where.pop()}")
        if any(x.device.type == "lazy" for x in inputs):
            model, inputs = copy.deepcopy(model).cpu(), tuple(x.cpu() for x in inputs)
        init(self, model, inputs)

    fvcore.nn.FlopCountAnalysis.__init__ = on_cpu
    step = torch.optim.AdamW.step

    def step_and_cut(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        torch._lazy.mark_step()
        return out

    torch.optim.AdamW.step = step_and_cut
    torch._lazy.ts_backend.init()


def main(argv: list[str]) -> None:
    suite_path, cache, results, run_id = argv
    install()
    from samplerbench import suite as suite_mod
    from samplerbench.tasks.run import run_suite

    print(run_suite(suite_mod.load(suite_path), results, cache, run_id=run_id, device="lazy", progress=False))


if __name__ == "__main__":
    main(sys.argv[1:])
