#!/usr/bin/env python3
"""Compiles every CUDA kernel file (Sources/LineaCUDA/Kernels/cu/*.cu) to PTX with NVRTC (no GPU needed).

Each .cu file is compiled as the binary holds it (scripts/embed_kernels.py: a `#line` directive, then the file), with
every .cuh file passed as a named NVRTC header, as CUDAContext.function does at run time.
NVRTC comes from PyPI (nvidia-cuda-nvrtc, CUDA 13.0 line), installed into a private venv when not found;
set LINEA_NVRTC to a libnvrtc.so path to use another. Exits 1 on any compile error, printing NVRTC's log.
A source that contains the line `// linea-nvrtc-arch: sm_90a` (wgmma and other arch-specific instructions) is
compiled for that architecture only (as compute_90a), whatever --arch says.
A source that contains lines `// linea-nvrtc-variant: TAG -OPTION...` (a module the launchers compile with those
options, e.g. the grouped value heads' -DLINEA_GVA=1; words after the options are a comment) is also compiled once per
such line with its options.
Each entry guarded by `LINEA_ONLY_<entry>` (compiled alone at run time, see `CUDAContext.entry` in CUDAUpload.swift) is also
compiled alone once, for the first architecture, and must hold that entry and no other guarded one.
With `--dump DIR`, writes each compiled PTX to DIR/<name>.<arch>.ptx, a variant's to DIR/<name>.<TAG>.<arch>.ptx (to diff
the PTX of two revisions).
Usage: scripts/check_kernels.py [--arch sm_90] [--arch sm_80] ... [--dump DIR]
"""
import ctypes
import glob
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in scripts/
import embed_kernels  # noqa: E402  (the texts as the binary holds them)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("LINEA_NVRTC_DIR", os.path.join(os.path.expanduser("~"), ".cache", "linea", "nvrtc"))
NVRTC_PIN = "nvidia-cuda-nvrtc==13.0.88"


def installed_nvrtc():
    patterns = [os.path.join(CACHE, "nvidia", "*", "lib", "libnvrtc.so.13"),
                os.path.join(CACHE, "venv", "lib", "python3*", "site-packages", "nvidia", "*", "lib", "libnvrtc.so.13")]
    hits = sorted(h for p in patterns for h in glob.glob(p))
    return hits[0] if hits else None


def find_nvrtc():
    """LINEA_NVRTC, else NVRTC installed from PyPI into ~/.cache/linea/nvrtc (pip --target, or a venv without pip)."""
    if os.environ.get("LINEA_NVRTC"):
        return os.environ["LINEA_NVRTC"]
    found = installed_nvrtc()
    if found:
        return found
    print(f"check_kernels: installing {NVRTC_PIN} into {CACHE}", file=sys.stderr)
    try:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               "--target", CACHE, NVRTC_PIN])
    except (subprocess.CalledProcessError, OSError):
        venv = os.path.join(CACHE, "venv")
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([os.path.join(venv, "bin", "python3"), "-m", "pip", "install", "-q", NVRTC_PIN])
    found = installed_nvrtc()
    if not found:
        sys.exit("check_kernels: libnvrtc.so.13 not found after installing " + NVRTC_PIN)
    return found


def kernel_sources():
    """Returns ([(name, source, path)] of the .cu files, [(include name, text)] of the .cuh headers), as embedded."""
    units, headers = [], []
    for path in embed_kernels.kernel_files():
        base = os.path.basename(path)
        if base.endswith(".cuh"):
            headers.append((base, embed_kernels.embedded_text(path)))
        else:
            units.append((base[:-len(".cu")], embed_kernels.embedded_text(path), path))
    return units, headers


def compile_ptx(lib, name, source, headers, arch, extra=()):
    prog = ctypes.c_void_p()
    texts = (ctypes.c_char_p * len(headers))(*[text.encode() for _, text in headers])
    names = (ctypes.c_char_p * len(headers))(*[include.encode() for include, _ in headers])
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), (name + ".cu").encode(), len(headers), texts, names)
    if rc != 0:
        return False, f"nvrtcCreateProgram failed ({rc})", [], ""
    opts = [f"--gpu-architecture=compute_{arch[3:]}".encode(), b"--std=c++17", b"-default-device"] + [o.encode() for o in extra]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    ptx_size = ctypes.c_size_t()
    ptx = ""
    if rc == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(ptx_size))
        buffer = ctypes.create_string_buffer(ptx_size.value)
        lib.nvrtcGetPTX(prog, buffer)
        ptx = buffer.value.decode(errors="replace")
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    text = log.value.decode(errors="replace").strip()
    if rc != 0:
        return False, f"nvrtcCompileProgram: {lib.nvrtcGetErrorString(rc).decode()}\n{text}", [], ""
    # The entry points as compiled (macro-generated ones included).
    entries = re.findall(r"^\.visible \.entry (\w+)\(", ptx, re.M)
    return True, f"{ptx_size.value} bytes of PTX" + (f"\n{text}" if text else ""), entries, ptx


def main():
    archs = [a for i, a in enumerate(sys.argv) if i > 0 and sys.argv[i - 1] == "--arch"] or ["sm_90"]
    dump = next((a for i, a in enumerate(sys.argv) if i > 0 and sys.argv[i - 1] == "--dump"), None)
    path = find_nvrtc()
    # NVRTC dlopens libnvrtc-builtins at compile time; load it first from the same folder (no LD_LIBRARY_PATH).
    for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so.*"))):
        if ".alt." not in builtins:
            ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(path)
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    sources, headers = kernel_sources()
    if not sources:
        sys.exit("check_kernels: no kernel sources found")
    failed = 0
    for name, src, path in sources:
        entries = []
        pinned = re.search(r"^// linea-nvrtc-arch: (sm_\w+)$", src, re.M)
        variants = [("", [])] + [(m.group(1), m.group(2).split())
                                 for m in re.finditer(r"^// linea-nvrtc-variant: (\w+)((?: -\S+)+)", src, re.M)]
        for arch in [pinned.group(1)] if pinned else archs:
            for tag, extra in variants:
                ok, msg, found, ptx = compile_ptx(lib, name, src, headers, arch, extra)
                if ok and dump:
                    os.makedirs(dump, exist_ok=True)
                    with open(os.path.join(dump, f"{name}.{tag + '.' if tag else ''}{arch}.ptx"), "w", encoding="utf-8") as out:
                        out.write(ptx)
                if not tag:
                    entries = found
                elif ok and found != entries:
                    ok, msg = False, f"variant {tag} has entries {found}, not the source's {entries}"
                status = "ok" if ok else "FAILED"
                shown = f" {' '.join(extra)}" if tag else ""
                print(f"[{status}] {name} ({path}) {arch}{shown}, NVRTC {major.value}.{minor.value}, entries {found}: {msg}")
                failed += not ok
        if not entries:
            print(f"[FAILED] {name}: no extern \"C\" __global__ entry")
            failed += 1
        # Entries guarded by LINEA_ONLY_<entry> (the launchers compile them one at a time with `CUDAContext.entry`): each
        # compiled alone holds that entry and the unguarded ones, and every guard names an entry of the source.
        guarded = sorted(set(re.findall(r"defined\(LINEA_ONLY_(\w+)\)", src)))
        failed_before = failed
        for entry in guarded:
            arch = pinned.group(1) if pinned else archs[0]
            ok, msg, found, _ = compile_ptx(lib, name, src, headers, arch, ["-DLINEA_SELECT", f"-DLINEA_ONLY_{entry}"])
            want = sorted({entry} | (set(entries) - set(guarded)))
            if entry not in entries:
                ok, msg = False, f"guard LINEA_ONLY_{entry} names no entry of the source"
            elif ok and sorted(found) != want:
                ok, msg = False, f"compiled alone it has entries {sorted(found)}, not {want}"
            if not ok:
                print(f"[FAILED] {name} {arch} -DLINEA_ONLY_{entry}: {msg}")
            failed += not ok
        if guarded:
            print(f"[{'ok' if failed == failed_before else 'FAILED'}] {name}: {len(guarded)} entries compiled one at a time")
    print(f"check_kernels: {len(sources)} sources, {len(headers)} headers, {failed} failure(s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
