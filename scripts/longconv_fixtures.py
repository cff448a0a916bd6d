#!/usr/bin/env python3
"""Builds Tests/LineaLMTests/Fixtures/longconv/fftconv.safetensors: long convolutions computed with torch.fft as
safari's `fftconv` computes them (H3, Hyena: rfft of u and k at size 2L, k's spectrum divided by 2L, irfft with
norm="forward", the first L values, plus u·D; no GELU here), and S4D convolution kernels from S4D's closed form
(state-spaces' S4DKernel: ZOH, `K = 2·Re(einsum(C·(exp(dt·A) - 1)/A, exp(dt·A·l)))`), for LongConvTests to compare
Linea's forms against. Everything is computed in float64 from float32 inputs.

safari's fftconv reads k[..., :2L]: taps from L to 2L - 1 would wrap around its size-2L circular product into the
first L outputs, so its Hyena cuts each filter to the sequence length first. The case with a filter longer than the
sequence stores the whole filter and the output of fftconv on its first L taps (Linea ignores taps >= L).

Case `c<i>` stores u [B, H, L], k [H, Lk], D [H] (when used) and o [B, H, L]; case `s<i>` stores A, B, C [H, N, 2]
(real, imaginary), dt [H] and K [H, L]; case `h<i>` stores a Hyena operator of order N as safari's
`HyenaOperator.forward` runs it after its short filter (one head): projections [B, (N+1)·D, L], filters [N-1, D, L],
bias [N-1, D] and y [B, D, L]. Case `f<i>` stores an implicit Hyena filter (safari's `HyenaFilter`: positional
embedding, Sin MLP with two inner layers, exponential modulation on) re-implemented here in float64: its weights
(`w<j>` [out, in], `b<j>`, `freq<j>` [1, F], `deltas` [1, 1, C], `bias` [C], the embedding `z` [1, Lmax, E]), the taps
k [1, L, C] that `filter(L)` returns, the same taps as the operator uses them (filters [N-1, D, L], bias_od [N-1, D]),
and the operator's output y [B, D, L] on projections [B, (N+1)·D, L]. safari's MLP applies one shared Sin module
(one `freq`); the fixture draws a frequency per layer so that a layer mix-up shows. The file is small (under 100 KB).
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_common import ensure  # noqa: E402

SAFETENSORS_VERSION = "0.8.0"
ensure("safetensors", SAFETENSORS_VERSION)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

# (B, H, L, Lk, with D): odd and prime lengths, one token, a short filter (zero-padded), a long one (cut).
CONV_CASES = [(2, 3, 64, 64, True), (1, 4, 101, 40, True), (1, 2, 129, 129, False), (2, 2, 50, 150, True), (1, 1, 1, 1, True),
              (1, 2, 997, 997, False)]
# (H, N, L): S4D-Lin initialization (A = -1/2 + i·π·n), random complex B and C, dt log-uniform in [0.001, 0.1].
S4D_CASES = [(2, 4, 64), (3, 16, 300)]
# (order N, B, D, L): Hyena operators.
HYENA_CASES = [(2, 2, 4, 50), (3, 1, 3, 77)]
# (order N, B, D, L, Lmax, emb_dim E, MLP width F, shift, normalized): implicit filters, L below and at Lmax.
FILTER_CASES = [(2, 2, 4, 40, 48, 5, 8, 0.0, False), (3, 1, 3, 64, 64, 3, 16, 0.1, True)]


def fftconv(u, k, D):
    """safari's fftconv without the GELU, in float64."""
    L = u.shape[-1]
    n = 2 * L
    k_f = torch.fft.rfft(k, n=n) / n
    u_f = torch.fft.rfft(u, n=n)
    y = torch.fft.irfft(u_f * k_f, n=n, norm="forward")[..., :L]
    return y if D is None else y + u * D.unsqueeze(-1)


def s4d_kernel(A, B, C, dt, L):
    """S4D's Vandermonde kernel with B kept apart (S4DKernel folds it into C), in complex128."""
    dtA = A * dt.unsqueeze(-1)
    coefficient = C * B * (torch.exp(dtA) - 1.0) / A
    powers = torch.exp(dtA.unsqueeze(-1) * torch.arange(L, dtype=torch.float64))
    return 2 * torch.einsum("hn,hnl->hl", coefficient, powers).real


def hyena(uc, filters, bias):
    """safari's HyenaOperator.forward from its short filter's output on (one head, no inner factor, no dropout)."""
    D = filters.shape[1]
    *x, v = uc.split(D, dim=1)
    for o, x_i in enumerate(reversed(x[1:])):
        v = fftconv(v * x_i, filters[o], bias[o])
    return v * x[0]


def positional_embedding(E, Lmax):
    """safari's PositionalEmbedding.z [1, Lmax, E] in float64: [t, cos(f w), -sin(f w)] per position."""
    bands = (E - 1) // 2
    t = torch.linspace(0, 1, Lmax, dtype=torch.float64)[None, :, None]
    w = 2 * math.pi * torch.arange(Lmax, dtype=torch.float64)[None, :, None] / Lmax
    f = torch.linspace(1e-4, bands - 1, bands, dtype=torch.float64)[None, None]
    phase = torch.exp(-1j * f * w)
    return torch.cat([t, phase.real, phase.imag], dim=-1), t


def implicit_filter(L, z, t, weights, biases, freqs, deltas, shift, normalized):
    """safari's HyenaFilter.filter(L) with modulate on: the Sin MLP over z[:, :L], the optional L1 normalization over
    channels, then h * (exp(-t |deltas|) + shift). Returns k [1, L, C]."""
    h = z[:, :L]
    for w, b, f in zip(weights[:-1], biases, freqs):
        h = torch.sin(f * (h @ w.T + b))
    h = h @ weights[-1].T
    if normalized:
        h = h / torch.norm(h, dim=-1, p=1, keepdim=True)
    return h * (torch.exp(-t[:, :L] * deltas.abs()) + shift)


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "LineaLMTests", "Fixtures", "longconv")
    os.makedirs(out_dir, exist_ok=True)
    generator = torch.Generator().manual_seed(21)
    tensors, metadata = {}, {"torch": torch.__version__}
    for i, (B, H, L, Lk, with_d) in enumerate(CONV_CASES):
        u = torch.randn(B, H, L, generator=generator)
        decay = torch.exp(-3 * torch.arange(Lk, dtype=torch.float32) / Lk)
        k = torch.randn(H, Lk, generator=generator) * decay
        D = torch.randn(H, generator=generator) if with_d else None
        o = fftconv(u.double(), k[:, :L].double(), None if D is None else D.double())
        for name, t in [("u", u), ("k", k), ("D", D), ("o", o)]:
            if t is not None:
                tensors[f"c{i}.{name}"] = t.contiguous().float()
        metadata[f"c{i}"] = json.dumps({"B": B, "H": H, "L": L, "Lk": Lk, "D": with_d})
    for i, (H, N, L) in enumerate(S4D_CASES):
        A = torch.complex(torch.full((H, N), -0.5), math.pi * torch.arange(N, dtype=torch.float32).repeat(H, 1))
        B = torch.complex(torch.randn(H, N, generator=generator), torch.randn(H, N, generator=generator))
        C = torch.complex(torch.randn(H, N, generator=generator), torch.randn(H, N, generator=generator)) * 0.5
        log_dt = torch.rand(H, generator=generator) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)
        dt = torch.exp(log_dt)
        K = s4d_kernel(A.to(torch.complex128), B.to(torch.complex128), C.to(torch.complex128), dt.double(), L)
        for name, t in [("A", torch.view_as_real(A)), ("B", torch.view_as_real(B)), ("C", torch.view_as_real(C)), ("dt", dt), ("K", K)]:
            tensors[f"s{i}.{name}"] = t.contiguous().float()
        metadata[f"s{i}"] = json.dumps({"H": H, "N": N, "L": L})
    for i, (N, B, D, L) in enumerate(HYENA_CASES):
        uc = torch.randn(B, (N + 1) * D, L, generator=generator)
        decay = torch.exp(-3 * torch.arange(L, dtype=torch.float32) / L)
        filters = torch.randn(N - 1, D, L, generator=generator) * decay * 0.5
        bias = torch.randn(N - 1, D, generator=generator)
        y = hyena(uc.double(), filters.double(), bias.double())
        for name, t in [("projections", uc), ("filters", filters), ("bias", bias), ("y", y)]:
            tensors[f"h{i}.{name}"] = t.contiguous().float()
        metadata[f"h{i}"] = json.dumps({"N": N, "B": B, "D": D, "L": L})
    for i, (N, B, D, L, Lmax, E, F, shift, normalized) in enumerate(FILTER_CASES):
        C = (N - 1) * D
        sizes = [(F, E), (F, F), (F, F), (C, F)]
        weights = [torch.randn(o, n, generator=generator) / math.sqrt(n) for o, n in sizes]
        biases = [torch.randn(F, generator=generator) * 0.5 for _ in sizes[:-1]]
        freqs = [torch.rand(1, F, generator=generator) * 1.5 + 0.5 for _ in sizes[:-1]]
        # ExponentialModulation's initial rates (fast 0.3, slow 1.5, target 1e-2), jittered so each channel differs.
        deltas = torch.linspace(math.log(1e-2) / 1.5, math.log(1e-2) / 0.3, C)[None, None] * (1 + 0.2 * torch.rand(C, generator=generator))
        bias = torch.randn(C, generator=generator)
        uc = torch.randn(B, (N + 1) * D, L, generator=generator)
        z, t = positional_embedding(E, Lmax)
        k = implicit_filter(L, z, t, [w.double() for w in weights], [b.double() for b in biases], [f.double() for f in freqs],
                            deltas.double(), shift, normalized)
        # HyenaOperator.forward's rearrangements for one head: channels (v o) -> o v.
        filters = k[0].reshape(L, D, N - 1).permute(2, 1, 0)
        bias_od = bias.double().reshape(D, N - 1).T
        y = hyena(uc.double(), filters, bias_od)
        named = [(f"w{j}", w) for j, w in enumerate(weights)] + [(f"b{j}", b) for j, b in enumerate(biases)]
        named += [(f"freq{j}", f) for j, f in enumerate(freqs)]
        named += [("deltas", deltas), ("bias", bias), ("z", z), ("k", k), ("filters", filters), ("bias_od", bias_od), ("projections", uc), ("y", y)]
        for name, tensor in named:
            tensors[f"f{i}.{name}"] = tensor.contiguous().float()
        metadata[f"f{i}"] = json.dumps({"N": N, "B": B, "D": D, "L": L, "Lmax": Lmax, "E": E, "F": F, "shift": shift,
                                        "normalized": normalized, "inner": 2, "modulate": True})
    path = os.path.join(out_dir, "fftconv.safetensors")
    save_file(tensors, path, metadata=metadata)
    print(f"wrote {len(CONV_CASES)} convolutions, {len(S4D_CASES)} S4D kernels, {len(HYENA_CASES)} Hyena operators and "
          f"{len(FILTER_CASES)} implicit filters to {os.path.normpath(path)} "
          f"({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
