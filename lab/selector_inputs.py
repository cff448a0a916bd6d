#!/usr/bin/env python3
"""Writes random q [1,T,H,D], k, v [1,T,Hkv,D] (f32) to a safetensors file for `linea op block_sparse --selector ...`
(numpy only: the safetensors layout is an 8-byte header length, a JSON header, then the raw little-endian data).
Keys get a few strong rows (every 37th scaled by 3) so that attention is uneven, as in real heads.
Usage: python3 lab/selector_inputs.py OUT.safetensors [T] [H] [Hkv] [D]
"""
import json
import struct
import sys

import numpy as np


def main():
    out = sys.argv[1]
    T, H, Hkv, D = (int(a) for a in (sys.argv[2:] + ["4096", "8", "2", "128"][len(sys.argv) - 2:])[:4])
    rng = np.random.default_rng(1)
    k = rng.standard_normal((1, T, Hkv, D)).astype(np.float32)
    k[:, ::37] *= 3
    tensors = {"q": rng.standard_normal((1, T, H, D)).astype(np.float32), "k": k,
               "v": rng.standard_normal((1, T, Hkv, D)).astype(np.float32)}
    header, offset, blobs = {}, 0, []
    for name, x in tensors.items():
        blob = np.ascontiguousarray(x).astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(x.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    print(f"wrote q [1,{T},{H},{D}], k, v [1,{T},{Hkv},{D}] to {out}")


if __name__ == "__main__":
    main()
