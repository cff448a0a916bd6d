#!/usr/bin/env python3
"""CPU speed of Linea against llama.cpp and Hugging Face transformers on the same
weights (issue 17, "What it must show": CPU speed side by side).

For each --types entry:
  1. `linea model init --type T --size S --dtype D --vocab 50257 --output WORK/D/T`
     (config.json, generation_config.json, model.safetensors).
  2. WORK/D/T-hf: the same weights (symlinked) with config.json plus "architectures"
     (llama.cpp's converter dispatches on it) and GPT-2's byte-level BPE tokenizer
     (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json) extracted offline
     from llama.cpp's models/ggml-vocab-gpt-2.gguf with gguf-py.
  3. llama.cpp: the llama-cpp-python sdist from PyPI (its vendor/llama.cpp), llama-bench
     built from it with CMake (only that target), the checkpoint converted with its
     convert_hf_to_gguf.py (--outtype f32|bf16, --no-mtp for qwen3_5_text), then
     `llama-bench -p P1,P2 -n 0` (prefill) and `llama-bench -p 0 -n N -d P1,P2`
     (decode after a P-token context, as linea bench and transformers measure it).
  4. transformers on the CPU (torch.set_num_threads): prefill = one forward of P
     random ids (median after a warm-up); decode = generate(N new tokens, greedy, eos off)
     timed per step by a logits processor: (N-1) / (time of step N - time of step 1).
  5. `linea bench --model WORK/D/T --prompt-tokens P1,P2 --new-tokens N`.
With --rounds N, steps 3 and 5 alternate N times and each figure keeps its best round (on a shared host a
neighbour's load slows whichever tool runs beside it; the fastest round is the least disturbed).
Prints one table; a tool that fails is reported as "failed: reason".

Example:
  python3 lab/compare_cpu_models.py --linea .build/release/linea --size 130M \
      --dtype f32 --prompt-tokens 512,4096 --new-tokens 128 --threads 2
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request

ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen3_5_text": "Qwen3_5ForCausalLM",
    "qwen3_next": "Qwen3NextForCausalLM",
    "mamba2": "Mamba2ForCausalLM",
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, timeout=None, env=None, cwd=None):
    log("$", " ".join(str(c) for c in cmd))
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=cwd)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-8:]
        raise RuntimeError(f"exit {p.returncode}: " + " | ".join(tail))
    return p.stdout


def short(e):
    s = str(e).replace("\n", " ")
    return s if len(s) < 160 else s[:157] + "..."


# ---------------------------------------------------------------- llama.cpp setup

def llama_cpp_source(work, version):
    """The llama-cpp-python sdist unpacked under work; returns its vendor/llama.cpp."""
    found = sorted(d for d in os.listdir(work) if d.startswith("llama_cpp_python-")
                   and os.path.isdir(os.path.join(work, d)))
    if version:
        found = [d for d in found if d == f"llama_cpp_python-{version}"]
    if not found:
        # The project's JSON lists every release's files (a mirror may not serve the per-version URL).
        meta_url = "https://pypi.org/pypi/llama-cpp-python/json"
        meta = json.load(urllib.request.urlopen(meta_url, timeout=60))
        files = meta["releases"].get(version, []) if version else meta["urls"]
        sdists = [u for u in files if u["packagetype"] == "sdist"]
        if not sdists:
            raise RuntimeError(f"llama-cpp-python {version or '(newest)'}: no sdist on PyPI")
        sdist = sdists[0]
        url = urllib.parse.urljoin(meta_url, sdist["url"])
        tgz = os.path.join(work, sdist["filename"])
        if not os.path.exists(tgz):
            log("downloading", url)
            urllib.request.urlretrieve(url, tgz)
        with tarfile.open(tgz) as t:
            t.extractall(work)
        found = [os.path.basename(tgz)[:-len(".tar.gz")]]
    src = os.path.join(work, found[-1], "vendor", "llama.cpp")
    try:  # the converter imports sentencepiece while it tries a Llama's vocab kinds
        import sentencepiece  # noqa: F401
    except ImportError:
        run([sys.executable, "-m", "pip", "install", "-q", "--only-binary", ":all:", "sentencepiece"])
    return src


def build_llama_bench(src):
    exe = os.path.join(src, "build", "bin", "llama-bench")
    if os.path.exists(exe):
        return exe
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    if not shutil.which("cmake"):
        run([sys.executable, "-m", "pip", "install", "-q", "cmake", "ninja"])
    run(["cmake", "-S", src, "-B", os.path.join(src, "build"), *gen,
         "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
         "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
         "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF"])
    run(["cmake", "--build", os.path.join(src, "build"), "--target", "llama-bench",
         "-j", str(os.cpu_count() or 2)])
    return exe


# ---------------------------------------------------------------- GPT-2 tokenizer

def write_gpt2_tokenizer(src, out):
    """GPT-2's byte-level BPE from llama.cpp's vocab gguf, as Hugging Face files."""
    if os.path.exists(os.path.join(out, "tokenizer.json")):
        return
    sys.path.insert(0, os.path.join(src, "gguf-py"))
    import gguf
    r = gguf.GGUFReader(os.path.join(src, "models", "ggml-vocab-gpt-2.gguf"))

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    with open(os.path.join(out, "vocab.json"), "w") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors, AddedToken
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GPT2TokenizerFast", "bos_token": "<|endoftext|>",
                   "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "model_max_length": 1024, "add_prefix_space": False}, f, indent=1)


def hf_folder(ckpt, hf, arch, tok_src):
    """ckpt's weights (symlinked) with architectures in config.json and a tokenizer."""
    os.makedirs(hf, exist_ok=True)
    for name in os.listdir(ckpt):
        if name.endswith(".safetensors") or name.endswith(".index.json") \
                or name == "generation_config.json":
            dst = os.path.join(hf, name)
            if not os.path.lexists(dst):
                os.symlink(os.path.abspath(os.path.join(ckpt, name)), dst)
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    cfg.setdefault("architectures", [arch])
    if cfg.get("model_type") == "mamba2":
        # llama.cpp's Mamba-2 converter pads the vocabulary to pad_vocab_size_multiple
        # (default 16) and then expects an embedding of that many rows; ours is not padded.
        cfg.setdefault("pad_vocab_size_multiple", 1)
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    write_gpt2_tokenizer(tok_src, hf)


# ---------------------------------------------------------------- the three tools

def bench_linea(linea, ckpt, prompts, new, threads):
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    env.setdefault("OMP_NUM_THREADS", str(threads))
    out = run([linea, "bench", "--model", ckpt, "--prompt-tokens", ",".join(map(str, prompts)),
               "--new-tokens", new], env=env, timeout=3600)
    res = {}
    for line in out.splitlines():
        cols = line.split()
        # model  B  prompt  prefill tokens/s  new  decode tokens/s  peak extra
        if len(cols) >= 5 and cols[1].isdigit() and cols[2].isdigit():
            res[int(cols[2])] = (float(cols[3]), float(cols[5]))
    if not res:
        raise RuntimeError("no rows in: " + out.strip()[-200:])
    return res, out.strip().splitlines()[-1]


def bench_llama_cpp(src, exe, hf, dtype, mtype, prompts, new, threads, reps, work):
    gguf_path = os.path.join(work, f"{os.path.basename(hf)}-{dtype}.gguf")
    if not os.path.exists(gguf_path):
        cmd = [sys.executable, os.path.join(src, "convert_hf_to_gguf.py"), hf,
               "--outtype", dtype, "--outfile", gguf_path]
        if mtype.startswith("qwen3_5"):
            cmd.append("--no-mtp")
        env = dict(os.environ, PYTHONPATH=os.path.join(src, "gguf-py"))
        try:
            run(cmd, env=env, timeout=1800)
        except Exception as e:
            raise RuntimeError("convert: " + short(e))
    p = ",".join(map(str, prompts))
    pre = json.loads(run([exe, "-m", gguf_path, "-p", p, "-n", "0", "-t", threads,
                          "-r", reps, "-o", "json"], timeout=3600))
    dec = json.loads(run([exe, "-m", gguf_path, "-p", "0", "-n", new, "-d", p, "-t", threads,
                          "-r", reps, "-o", "json"], timeout=3600))
    res = {P: [None, None] for P in prompts}
    for e in pre:
        if e["n_prompt"] in res and e["n_gen"] == 0:
            res[e["n_prompt"]][0] = e["avg_ts"]
    for e in dec:
        if e.get("n_depth") in res and e["n_gen"] > 0:
            res[e["n_depth"]][1] = e["avg_ts"]
    return res


def bench_transformers(hf, dtype, prompts, new, threads, reps):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    td = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=td).eval()
    vocab = model.config.vocab_size
    res = {}

    def forward(ids):
        try:
            return model(ids, logits_to_keep=1, use_cache=True)
        except TypeError:
            return model(ids, use_cache=True)

    from transformers import LogitsProcessor, LogitsProcessorList

    class Stamp(LogitsProcessor):
        """Records the time of each step: the first call follows the prefill, each
        later one a decode forward with the cache."""
        def __init__(self):
            self.t = []

        def __call__(self, input_ids, scores):
            self.t.append(time.perf_counter())
            return scores

    def generate(ids, n, stamp=None):
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                              min_new_tokens=n, do_sample=False, eos_token_id=None,
                              pad_token_id=0, use_cache=True,
                              logits_processor=LogitsProcessorList([stamp] if stamp else []))

    with torch.inference_mode():
        forward(torch.randint(0, vocab, (1, 16)))
        for P in prompts:
            ids = torch.randint(0, vocab, (1, P))
            try:
                ts = []
                for _ in range(reps + 1):
                    t = time.perf_counter(); forward(ids); ts.append(time.perf_counter() - t)
                prefill = P / statistics.median(ts[1:])
            except Exception as e:
                prefill = "failed: " + short(e)
            try:
                generate(ids[:, :16], 2)
                stamp = Stamp()
                generate(ids, new, stamp)
                steps = len(stamp.t) - 1
                decode = steps / (stamp.t[-1] - stamp.t[0]) if steps > 0 else "failed: no steps"
            except Exception as e:
                decode = "failed: " + short(e)
            res[P] = [prefill, decode]
            log(f"transformers {P}: {res[P]}")
    return res


# ---------------------------------------------------------------- table

def fmt(v):
    return f"{v:.1f}" if isinstance(v, (int, float)) else (v or "-")


def ratio(a, b):
    return f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"


def best(old, new):
    """Per prompt and figure, the higher tokens/s of two rounds' results; a failed round keeps the other's figures."""
    if not isinstance(old, dict):
        return new
    if not isinstance(new, dict):
        return old
    num = lambda v: isinstance(v, (int, float))
    return {P: [max(o, n) if num(o) and num(n) else (o if num(o) else n)
                for o, n in zip(old.get(P, [None, None]), new.get(P, [None, None]))] for P in {**old, **new}}


def faster(a, b):
    nums = [x for x in (a, b) if isinstance(x, (int, float))]
    return max(nums) if nums else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--linea", default=".build/release/linea")
    ap.add_argument("--types", default="llama,qwen3_5_text,mamba2")
    ap.add_argument("--size", default="130M")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--prompt-tokens", default="512,4096")
    ap.add_argument("--new-tokens", default="128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="repetitions (llama-bench -r, transformers median)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="linea and llama.cpp run alternately this many times; each figure keeps its best round")
    ap.add_argument("--work", default="/tmp/linea-cpu-compare")
    ap.add_argument("--llama-cpp-python", default="", help="sdist version (default: newest; an unpacked one in --work is reused)")
    ap.add_argument("--llama-bench", default="", help="a llama-bench binary to use instead of building one")
    ap.add_argument("--skip", default="", help="tools to skip, comma-separated: linea,llama.cpp,transformers")
    a = ap.parse_args()

    prompts = [int(x) for x in a.prompt_tokens.split(",")]
    skip = set(filter(None, a.skip.split(",")))
    threads = str(a.threads)
    os.makedirs(a.work, exist_ok=True)
    linea = os.path.abspath(a.linea)

    src = exe = None
    setup_error = None
    try:
        src = llama_cpp_source(a.work, a.llama_cpp_python)
        if "llama.cpp" not in skip:
            exe = a.llama_bench or build_llama_bench(src)
    except Exception as e:
        setup_error = "failed: llama.cpp setup: " + short(e)
        log(setup_error)

    rows = []
    notes = []
    for T in a.types.split(","):
        ckpt = os.path.join(a.work, f"{a.size}-{a.dtype}", T)
        hf = ckpt + "-hf"
        results = {}
        try:
            if not os.path.exists(os.path.join(ckpt, "model.safetensors")) and \
                    not os.path.exists(os.path.join(ckpt, "model.safetensors.index.json")):
                run([linea, "model", "init", "--type", T, "--size", a.size, "--dtype", a.dtype,
                     "--vocab", "50257", "--output", ckpt])
            if src is None:
                raise RuntimeError(setup_error or "no llama.cpp source for the tokenizer")
            hf_folder(ckpt, hf, ARCHITECTURES.get(T, T), src)
        except Exception as e:
            err = "failed: checkpoint: " + short(e)
            for P in prompts:
                rows.append((T, P, {k: [err, err] for k in ("linea", "llama.cpp", "transformers")}))
            continue

        # Rounds alternate the tools, so that a noisy neighbour slows both alike; each figure keeps its best round.
        for _ in range(a.rounds):
            if "linea" in skip:
                results["linea"] = "skipped"
            else:
                try:
                    r, note = bench_linea(linea, ckpt, prompts, a.new_tokens, a.threads)
                    results["linea"] = best(results.get("linea"), r)
                    notes.append(f"linea {T}: {note}")
                except Exception as e:
                    results["linea"] = best(results.get("linea"), "failed: " + short(e))
            if "llama.cpp" in skip:
                results["llama.cpp"] = "skipped"
            elif exe is None:
                results["llama.cpp"] = setup_error
            else:
                try:
                    r = bench_llama_cpp(src, exe, hf, a.dtype, T, prompts, a.new_tokens, threads, str(a.reps),
                                        os.path.dirname(ckpt))
                    results["llama.cpp"] = best(results.get("llama.cpp"), r)
                except Exception as e:
                    results["llama.cpp"] = best(results.get("llama.cpp"), "failed: " + short(e))
        if "transformers" in skip:
            results["transformers"] = "skipped"
        else:
            try:
                results["transformers"] = bench_transformers(hf, a.dtype, prompts, int(a.new_tokens),
                                                             a.threads, a.reps)
            except Exception as e:
                results["transformers"] = "failed: " + short(e)
        for P in prompts:
            per = {}
            for k, v in results.items():
                per[k] = v.get(P, ["-", "-"]) if isinstance(v, dict) else [v, v]
            rows.append((T, P, per))
        log(f"{T} done: {results}")

    # the table
    head = ["type", "dtype", "prompt",
            "prefill linea", "llama.cpp", "transformers", "linea/llama.cpp", "linea/faster",
            "decode linea", "llama.cpp", "transformers", "linea/llama.cpp", "linea/faster"]
    table = []
    failures = []
    for T, P, per in rows:
        line = [T, a.dtype, str(P)]
        for i in (0, 1):
            l, c, t = per["linea"][i], per["llama.cpp"][i], per["transformers"][i]
            for name, v in (("linea", l), ("llama.cpp", c), ("transformers", t)):
                if isinstance(v, str) and v.startswith("failed"):
                    failures.append(f"{T} {name}: {v}")
            cell = lambda v: fmt(v) if not (isinstance(v, str) and v.startswith("failed")) else "failed"
            line += [cell(l), cell(c), cell(t), ratio(l, c), ratio(l, faster(c, t))]
        table.append(line)
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(head)]
    print(f"# linea vs llama.cpp (llama-cpp-python {os.path.basename(os.path.dirname(os.path.dirname(src))) if src else '?'}) "
          f"vs transformers on the CPU; size {a.size}, {a.threads} threads, {a.new_tokens} new tokens "
          f"decoded after each prompt; tokens/s")
    try:
        import torch, transformers
        print(f"# torch {torch.__version__}, transformers {transformers.__version__}, "
              f"llama-bench -r {a.reps}, transformers median of {a.reps} after a warm-up; linea and llama.cpp best of "
              f"{a.rounds} alternating round(s)")
    except Exception:
        pass
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    for n in notes:
        print("# " + n)
    for f in dict.fromkeys(failures):
        print("# " + f)


if __name__ == "__main__":
    main()
