#!/usr/bin/env bash
# Times several versions of the chunked kernel in one device call (same GPU, same run), with lab/chunked_lab.py.
#   here:             lab/lab_versions.sh pack REV [REV ...]   # git revisions (or "work" for the working tree)
#   on the GPU:       lab/lab_versions.sh run [chunked_lab.py options, e.g. --check --T 2048]
# pack writes, per revision, chunked_lab.py, compare_gpu.py and the kernel sources (the files in Kernels/cu, or the
# Swift files that held the chunked ones before) into
# .device/lab/NN-REV/ with the repository's layout (so the lab compiles that revision's kernels); carry ".device/lab"
# (and ".whl" for --fla). run runs each copy in order, writes its output to $OUT/lab-NN-REV.txt (at most 8 files come
# back) and prints the timing lines of every version together.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each revision's lab reads its own layout: the kernel files, or the Swift literals of revisions before them.
# The lab was benchmarks/ before session 15: both places are listed, each revision has one.
files="lab/chunked_lab.py lab/compare_gpu.py lab/chunked_split_lab.cu benchmarks/chunked_lab.py benchmarks/compare_gpu.py
benchmarks/chunked_split_lab.cu Sources/LineaCUDA/Kernels/cu
Sources/LineaCUDA/Kernels/ChunkedKernel.swift Sources/LineaCUDA/Kernels/ChunkedCommonKernel.swift"
case "${1:-}" in
pack)
    shift
    [ $# -ge 1 ] || { echo "lab_versions: pack needs at least one revision" >&2; exit 2; }
    rm -rf .device/lab
    n=0
    for rev in "$@"; do
        dir=.device/lab/$(printf %02d $n)-${rev//[^A-Za-z0-9._-]/_}
        if [ "$rev" = work ]; then list=$(git ls-files --cached --others --exclude-standard -- $files); else list=$(git ls-tree -r --name-only "$rev" -- $files); fi
        for f in $list; do
            [ "$rev" != work ] || [ -e "$f" ] || continue  # deleted in the working tree
            mkdir -p "$dir/$(dirname "$f")"
            if [ "$rev" = work ]; then cp "$f" "$dir/$f"; else git show "$rev:$f" > "$dir/$f"; fi
        done
        echo "lab_versions: $dir" >&2
        n=$((n + 1))
    done
    ;;
run)
    shift
    out=${OUT:-/tmp/lab_versions}
    mkdir -p "$out"
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --target /tmp/lab-site .whl/*.whl
        export PYTHONPATH=/tmp/lab-site
    fi
    for dir in .device/lab/*/; do
        name=$(basename "$dir")
        lab=$dir/lab; [ -d "$lab" ] || lab=$dir/benchmarks
        PYTHONPATH="${PYTHONPATH:-}:$lab" python3 -u "$lab/chunked_lab.py" "$@" > "$out/lab-$name.txt" 2>&1 \
            || echo "lab_versions: $name exited with $?" >&2
    done
    for dir in .device/lab/*/; do
        name=$(basename "$dir")
        echo "== $name"
        grep -h "^check\|^time\|^fla" "$out/lab-$name.txt" || tail -3 "$out/lab-$name.txt"
    done
    ;;
*)
    sed -n 2,9p "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
