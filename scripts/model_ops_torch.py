#!/usr/bin/env python3
"""Independent numbers for Tests/LineaTests/ModelOpsTests.swift (`TorchValues`), computed once with torch (CPU,
float64) following Hugging Face transformers / fla / causal-conv1d. Run: python3 scripts/model_ops_torch.py"""
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
x = torch.tensor([[0.5, -1.25, 2.0, 0.75, -0.3, 1.1], [3.0, 0.2, -0.7, -2.2, 0.9, 0.05]])  # [2, 6]
w = torch.tensor([0.9, 1.1, -0.4, 0.25, 1.5, -0.8])
z = torch.tensor([[1.0, -0.5, 0.3, 2.0, -1.5, 0.8], [-0.2, 0.6, 1.4, -0.9, 0.1, -2.5]])
eps = 1e-6


def show(name, t):
    print(f"    static let {name}: [Double] = [{', '.join(f'{v:.15g}' for v in t.flatten().tolist())}]")


def rms(h):  # LlamaRMSNorm / Qwen3NextRMSNorm core
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


show("rmsNorm", rms(x) * w)
show("rmsNormZeroCentered", rms(x) * (1.0 + w))  # Qwen3NextRMSNorm
show("rmsNormGated", rms(x) * w * F.silu(z))  # Qwen3NextRMSNormGated
show("l2Norm", x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps))  # fla l2norm
a = torch.tensor([-30.0, -3.0, -0.5, 0.0, 0.7, 2.5, 19.0, 25.0])
show("activationInput", a)
show("gelu", F.gelu(a))
show("geluTanh", F.gelu(a, approximate="tanh"))
show("softplus", F.softplus(a))
show("silu", F.silu(a))


def rotate_half(t):
    t1, t2 = t[..., : t.shape[-1] // 2], t[..., t.shape[-1] // 2:]
    return torch.cat((-t2, t1), dim=-1)


# Rotary on [T=2, H=1, D=6] with positions [3, 10], theta 100, rotary_dim 4 (partial_rotary_factor 2/3).
q = x.reshape(2, 1, 6)
pos = torch.tensor([3.0, 10.0])
rd, theta = 4, 100.0
inv_freq = 1.0 / (theta ** (torch.arange(0, rd, 2) / rd))
freqs = pos[:, None] * inv_freq[None, :]  # [T, rd/2]
emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
rot, rest = q[..., :rd], q[..., rd:]
show("rotaryHalfSplit", torch.cat((rot * emb.cos() + rotate_half(rot) * emb.sin(), rest), dim=-1))
c, s = freqs.cos()[:, None, :], freqs.sin()[:, None, :]
ev, od = rot[..., 0::2], rot[..., 1::2]
show("rotaryInterleaved", torch.cat((torch.stack((ev * c - od * s, od * c + ev * s), -1).flatten(-2), rest), dim=-1))

# Causal depthwise conv1d (causal_conv1d_fn semantics) on x [B=1, T=2, C=6] channels-last, weight [C, 3], bias, SiLU.
cw = torch.tensor([[0.2, -0.5, 1.0], [0.3, 0.3, 0.3], [-1.0, 0.5, 0.25], [0.1, 0.0, -0.2], [0.7, 0.7, -0.7], [1.2, -0.1, 0.4]])
cb = torch.tensor([0.1, -0.1, 0.0, 0.2, 0.05, -0.3])
y = F.conv1d(x.T[None], cw[:, None, :], cb, padding=2, groups=6)[..., :2]  # [1, C, T]
show("conv1dSiLU", F.silu(y).transpose(1, 2))

# Softmax and MoE routing (Qwen2-MoE: softmax, topk, norm_topk_prob) of x as [2 rows, 6 experts], k = 2.
p = F.softmax(x, dim=-1)
show("softmax", p)
tw, ti = torch.topk(p, 2, dim=-1)
show("routingWeights", tw / tw.sum(-1, keepdim=True))
show("routingIndices", ti.double())

# Sampling warpers (transformers' TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper) on x[1]: T 1.5, k 4, p 0.85.
sc = x[1] / 1.5
sc = sc.masked_fill(sc < torch.topk(sc, 4)[0][-1], -float("inf"))
sorted_logits, sorted_idx = torch.sort(sc, descending=False)
remove = sorted_logits.softmax(-1).cumsum(-1) <= (1 - 0.85)
remove[-1:] = False
sc = sc.masked_fill(remove.scatter(0, sorted_idx, remove), -float("inf"))
show("samplingDistribution", F.softmax(sc, -1))
