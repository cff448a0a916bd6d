#!/usr/bin/env python3
"""Compiles the Hopper attention kernel source to sm_90a SASS with NVRTC (no GPU needed) and prints ptxas's
resource report (registers, spills, shared memory) per entry. Usage: lab/hopper_regs.py [--source NAME]
[-DNAME=VALUE ...] (NAME: a kernel literal of scripts/check_kernels.py, attention_hopper by default)."""
import ctypes, glob, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import check_kernels as ck

path = ck.find_nvrtc()
for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so.*"))):
    if ".alt." not in builtins:
        ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
lib = ctypes.CDLL(path)
argv = sys.argv[1:]
name = "attention_hopper"
if argv[:1] == ["--source"]:
    name, argv = argv[1], argv[2:]
src = [s for n, s, _ in ck.extract_sources() if n == name][0]
prog = ctypes.c_void_p()
lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), (name + ".cu").encode(), 0, None, None)
opts = [b"--gpu-architecture=sm_90a", b"--std=c++17", b"-default-device", b"--ptxas-options=-v"] + [a.encode() for a in argv]
rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
size = ctypes.c_size_t()
lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
log = ctypes.create_string_buffer(size.value)
lib.nvrtcGetProgramLog(prog, log)
print(log.value.decode(errors="replace"))
sys.exit(rc)
