# PyTorch SDPA causal forward, bf16, B*T = 32768, H = 16, D = 128 (same shapes as `linea bench --backend cuda`).
import sys, torch, torch.nn.functional as F
print("torch", torch.__version__, torch.cuda.get_device_name(0))
def bench(fn, warm=3, it=10):
    for _ in range(warm): fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(it):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort(); return ts[len(ts) // 2], ts[0]
Ts = [int(x) for x in sys.argv[1].split(",")] if len(sys.argv) > 1 else [2048, 8192, 32768]
for T in Ts:
    B = 32768 // T
    q, k, v = (torch.randn(B, 16, T, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    med, mn = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    fl = 4 * B * 16 * 128 * T * (T + 1) / 2
    print(f"bench torch_sdpa causal bf16 B={B} T={T} H=16 D=128: median {med:.3f} ms, min {mn:.3f} ms, {fl / med / 1e9:.1f} TFLOP/s")
