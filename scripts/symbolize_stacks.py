#!/usr/bin/env python3
"""Symbolizes the output of scripts/stacks.c: `symbolize_stacks.py STACKS [ROOT]` (ROOT: a folder holding copies of the remote binaries), where ROOT is where the remote
files now lie (a path in the maps is looked up as ROOT + its basename first, then as is). Needs llvm-symbolizer and
swift-demangle on PATH. Threads with the same stack are printed once, with their count."""
import collections, os, re, subprocess, sys

text = open(sys.argv[1], errors="replace").read().splitlines()
root = sys.argv[2] if len(sys.argv) > 2 else None
maps, threads, current, in_maps = [], [], None, False
for line in text:
    if line == "maps":
        in_maps = True
    elif in_maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \S+\s+(.*)", line)
        if m and m.group(5).startswith("/") and "x" in m.group(3):
            maps.append((int(m.group(1), 16), int(m.group(2), 16), int(m.group(4), 16), m.group(5)))
    elif line.startswith("thread "):
        current = [line, []]; threads.append(current)
    elif current and re.match(r"\s+(pc|sp|fp|scan) 0x", line):
        current[1].append((line.split()[0], int(line.split()[1], 16)))
    elif current:
        current[0] += " " + line.strip()

def where(address):
    for start, end, offset, path in maps:
        if start <= address < end:
            if root is None: return path, address - start + offset
            # A remote file: its copy in ROOT, else the same Swift runtime library here (packed from this toolchain),
            # else unknown (this host's libc is not the remote one).
            base = os.path.basename(path)
            for local in (os.path.join(root, base), os.path.join(toolchain, base)):
                if os.path.exists(local): return local, address - start + offset
            return "?" + base, address - start + offset
    return None, address

toolchain = os.path.join(os.path.dirname(os.path.realpath(subprocess.run(
    ["sh", "-c", "command -v swift"], capture_output=True, text=True).stdout.strip() or "/")), "../lib/swift/linux")
cache = {}
def name(kind, address):
    # A return address points after the call: look up the byte before it.
    path, offset = where(address - (0 if kind == "pc" else 1))
    if path is None: return f"0x{address:x} ?"
    if path.startswith("?"): return f"{path[1:]}+0x{offset:x}"
    key = (path, offset)
    if key not in cache:
        out = subprocess.run(["llvm-symbolizer", f"--obj={path}", f"0x{offset:x}"], capture_output=True, text=True).stdout
        lines = [l for l in out.splitlines() if l.strip()]
        symbol = lines[0] if lines and lines[0] != "??" else "??"
        symbol = subprocess.run(["swift-demangle", "--simplified", "--compact", symbol], capture_output=True, text=True).stdout.strip() or symbol
        cache[key] = f"{symbol[:160]}  ({os.path.basename(path)}{'' if len(lines) < 2 else ' ' + os.path.basename(lines[1])})"
    return cache[key]

groups = collections.OrderedDict()
for header, frames in threads:
    # The frame-pointer chain, then (marked "~") the code addresses found on the stack, for the chains that break.
    stack = tuple(name(k, a) for k, a in frames if k != "scan")
    scanned = [a for k, a in frames if k == "scan" and where(a)[0] is not None][:24]
    stack += tuple("~ " + name("scan", a) for a in scanned)
    groups.setdefault(stack, []).append(header)
for stack, headers in groups.items():
    print(f"== {len(headers)} thread(s): {', '.join(h.split()[1] + ' ' + h.split()[3] for h in headers[:16])}")
    for frame in stack: print("   ", frame)
