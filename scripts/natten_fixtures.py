#!/usr/bin/env python3
"""Builds Tests/LineaLMTests/Fixtures/natten/na_flex.safetensors: neighborhood attention outputs computed by NATTEN
itself (natten.na1d / na2d / na3d), for NeighborhoodTests to compare Linea's forms against.

NATTEN's CUDA library (libnatten) does not exist for a CPU, but its pure-Python wheel runs its Flex Attention backend
(`backend="flex-fna"`, the mask of natten/backends/flex.py, unfused without torch.compile) on the CPU, so the outputs
here are NATTEN's own. That backend takes head dims that are powers of two in 8...512 and the same head dim for q, k
and v, so the cases use D = 8; kernel == grid size on every axis would go through natten.attention, which has no CPU
backend, so the full-kernel case keeps one axis shorter than the grid.

Each case `c<i>` stores q, k, v `[B, *spatial, heads, D]` (f32, seeded normal), NATTEN's o and lse (return_lse=True),
and its arguments as JSON in the file metadata under the same name. The file is small (about 130 KB).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_common import ensure  # noqa: E402

NATTEN_VERSION = "0.21.7"
SAFETENSORS_VERSION = "0.8.0"
ensure("natten", NATTEN_VERSION)
ensure("safetensors", SAFETENSORS_VERSION)

import natten  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

# (batch, spatial, kernel_size, stride, dilation, is_causal, heads, kv heads): dilation groups of unequal length,
# even kernels and strides, per-axis causal, GQA, Swin blocks (stride == kernel), kernel == grid on one axis.
CASES = [
    (2, (13,), (5,), (1,), (2,), (False,), 2, 1),
    (1, (16,), (4,), (3,), (1,), (True,), 2, 2),
    (1, (21,), (7,), (4,), (3,), (False,), 1, 1),
    (1, (9, 11), (5, 3), (2, 3), (1, 2), (True, False), 2, 1),
    (1, (8, 12), (4, 4), (4, 4), (1, 1), (False, False), 1, 1),
    (1, (6, 9), (6, 3), (1, 1), (1, 3), (True, False), 2, 2),
    (1, (7, 10), (3, 5), (3, 2), (2, 1), (False, True), 2, 1),
    (1, (5, 6, 7), (3, 4, 3), (1, 2, 1), (1, 1, 2), (False, True, False), 2, 2),
]
D = 8


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "LineaLMTests", "Fixtures", "natten")
    os.makedirs(out_dir, exist_ok=True)
    generator = torch.Generator().manual_seed(20)
    tensors, metadata = {}, {"natten": natten.__version__, "torch": torch.__version__, "backend": "flex-fna"}
    for i, (batch, spatial, kernel, stride, dilation, causal, heads, kv_heads) in enumerate(CASES):
        q = torch.randn(batch, *spatial, heads, D, generator=generator)
        k = torch.randn(batch, *spatial, kv_heads, D, generator=generator)
        v = torch.randn(batch, *spatial, kv_heads, D, generator=generator)
        na = {1: natten.na1d, 2: natten.na2d, 3: natten.na3d}[len(spatial)]
        o, lse = na(q, k, v, kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal,
                    return_lse=True, backend="flex-fna")
        for name, t in [("q", q), ("k", k), ("v", v), ("o", o), ("lse", lse)]:
            tensors[f"c{i}.{name}"] = t.contiguous().float()
        metadata[f"c{i}"] = json.dumps({"kernel_size": kernel, "stride": stride, "dilation": dilation, "is_causal": causal})
    path = os.path.join(out_dir, "na_flex.safetensors")
    save_file(tensors, path, metadata=metadata)
    print(f"wrote {len(CASES)} cases to {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
