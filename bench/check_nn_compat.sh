#!/usr/bin/env bash
# Does an exported .ts load and stream under libtorch 2.5.1 (what nn~ 1.6 ships), with output
# equal to mcrave's own streaming engine? Not part of CI (downloads the ~0.9 GB torch 2.5.1 wheel
# from PyPI once and unpacks libtorch into a side folder; never a project dependency).
#
#   bash bench/check_nn_compat.sh [MODEL] [--precision bf16|int8]
#   (MODEL: checkpoint or registry entry, default a tiny one; --precision: reduced conv weights,
#   compared against the engine's matching runtime)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
root="${NN_COMPAT_ROOT:-$repo/bench/results/nn_compat}"
harness="${NN_HARNESS_DIR:-$repo/../shared/tools/nn_harness}"
torch_root="$root/torch-2.5.1/x/torch"
mkdir -p "$root"

# 1. libtorch 2.5.1 + an nn~ contract harness (checks methods, attributes, batch > 1; not shipped:
#    NN_HARNESS_DIR names it, default ../shared/tools/nn_harness beside the repository)
if [ ! -x "$root/torch-2.5.1/build/nn_harness" ]; then
  BUILD_ROOT="$root" bash "$harness/build_against_release.sh" 2.5.1
fi
# 2. our streaming probe, linked the same way as the harness
extra=$(find "$root/torch-2.5.1/nv" -name '*.so*' -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ' ' || true)
rpaths=(); for d in $extra; do rpaths+=(-L"$d" -Wl,-rpath,"$d"); done
g++ -std=c++17 -O2 -D_GLIBCXX_USE_CXX11_ABI=0 -I"$torch_root/include" \
  -I"$torch_root/include/torch/csrc/api/include" "$here/nn_compat/stream_ts.cpp" -o "$root/stream_ts" \
  -Wl,--disable-new-dtags -L"$torch_root/lib" -Wl,-rpath,"$torch_root/lib" "${rpaths[@]}" \
  -Wl,--no-as-needed -ltorch_cpu -lc10 -Wl,--as-needed -lpthread
# 3. export, stream in both, compare; then the contract harness on the same file
python3 "$here/nn_compat/compare.py" "$root/stream_ts" "$root/work" "$@"
"$root/torch-2.5.1/build/nn_harness" "$root/work/model.ts" --mode nn --buffer 2048 --batch 2
