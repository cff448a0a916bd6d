#!/usr/bin/env python3
"""Compiles every CUDA kernel source embedded in Sources/LineaCUDA to PTX with NVRTC (no GPU needed).

The sources are Swift raw string literals between `// LINEA-KERNEL-BEGIN <name>` and `// LINEA-KERNEL-END`.
NVRTC comes from PyPI (nvidia-cuda-nvrtc, CUDA 13.0 line), installed into a private venv when not found;
set LINEA_NVRTC to a libnvrtc.so path to use another. Exits 1 on any compile error, printing NVRTC's log.
A source with the line `// linea-nvrtc-header` holds device helpers only (no entries needed), and one declared as
`prefix + <literal>` is compiled with that prefix literal in front, as Swift builds it.
A source that contains the line `// linea-nvrtc-arch: sm_90a` (wgmma and other arch-specific instructions) is
compiled for that architecture only (as compute_90a), whatever --arch says.
Usage: scripts/check_kernels.py [--arch sm_90] [--arch sm_80] ...
"""
import ctypes
import glob
import os
import re
import subprocess
import sys

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


def extract_sources():
    """Returns [(name, source, file)] for every marked kernel literal, as compiled: a literal declared as
    `static let x = prefix + <literal>` starts with the literal `prefix` (e.g. chunkedCommon's device helpers)."""
    found, literals = [], {}
    pattern = re.compile(r'// LINEA-KERNEL-BEGIN (\w+)\n.*?static let (\w+) = (?:(\w+) \+ )?#"""\n(.*?)\n"""#\s*\n\s*'
                         r'// LINEA-KERNEL-END', re.S)
    for path in sorted(glob.glob(os.path.join(ROOT, "Sources", "LineaCUDA", "**", "*.swift"), recursive=True)):
        text = open(path, encoding="utf-8").read()
        begins = text.count("LINEA-KERNEL-BEGIN")
        matches = pattern.findall(text)
        if len(matches) != begins:
            sys.exit(f"check_kernels: {path}: {begins} BEGIN markers but {len(matches)} well-formed kernel literals")
        for name, swift_name, prefix, src in matches:
            literals[swift_name] = src
            found.append((name, src, prefix, os.path.relpath(path, ROOT)))
    missing = [prefix for _, _, prefix, _ in found if prefix and prefix not in literals]
    if missing:
        sys.exit(f"check_kernels: prefix literals not found: {missing}")
    return [(name, (literals[prefix] + src) if prefix else src, path) for name, src, prefix, path in found]


def compile_ptx(lib, name, source, arch):
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), (name + ".cu").encode(), 0, None, None)
    if rc != 0:
        return False, f"nvrtcCreateProgram failed ({rc})"
    opts = [f"--gpu-architecture=compute_{arch[3:]}".encode(), b"--std=c++17", b"-default-device"]
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
        return False, f"nvrtcCompileProgram: {lib.nvrtcGetErrorString(rc).decode()}\n{text}", []
    # The entry points as compiled (macro-generated ones included).
    entries = re.findall(r"^\.visible \.entry (\w+)\(", ptx, re.M)
    return True, f"{ptx_size.value} bytes of PTX" + (f"\n{text}" if text else ""), entries


def main():
    archs = [a for i, a in enumerate(sys.argv) if i > 0 and sys.argv[i - 1] == "--arch"] or ["sm_90"]
    path = find_nvrtc()
    # NVRTC dlopens libnvrtc-builtins at compile time; load it first from the same folder (no LD_LIBRARY_PATH).
    for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so.*"))):
        if ".alt." not in builtins:
            ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(path)
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    sources = extract_sources()
    if not sources:
        sys.exit("check_kernels: no kernel sources found")
    failed = 0
    for name, src, path in sources:
        entries = []
        pinned = re.search(r"^// linea-nvrtc-arch: (sm_\w+)$", src, re.M)
        for arch in [pinned.group(1)] if pinned else archs:
            ok, msg, entries = compile_ptx(lib, name, src, arch)
            status = "ok" if ok else "FAILED"
            print(f"[{status}] {name} ({path}) {arch}, NVRTC {major.value}.{minor.value}, entries {entries}: {msg}")
            failed += not ok
        if not entries and "// linea-nvrtc-header" not in src:
            print(f"[FAILED] {name}: no extern \"C\" __global__ entry")
            failed += 1
    print(f"check_kernels: {len(sources)} sources, {failed} failure(s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
