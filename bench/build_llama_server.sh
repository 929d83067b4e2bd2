#!/usr/bin/env bash
# Build llama.cpp's `llama-server` and `llama-bench` from the llama.cpp sources that the llama-cpp-python source
# package pinned in pyproject.toml's `bench` extra vendors (vendor/llama.cpp), so that the server and the Python
# bindings in bench/bench_llamacpp.py are the same llama.cpp. Everything goes to build/llama.cpp/ (ignored):
#   sdist/  the source package, as pip downloads it from PyPI
#   src/    the source package, extracted
#   cmake/  the cmake build; the binaries are cmake/bin/llama-server and cmake/bin/llama-bench
#   build.log  configure + build output (which CPU features the build enabled)
# CMake's defaults otherwise, as a user building llama.cpp on this machine gets them: GGML_NATIVE=ON, i.e.
# -march=native, every instruction set this CPU has. The web UI is not built (it would be downloaded) and HTTPS is
# off (the benchmark talks to 127.0.0.1). About 10 minutes on 2 cores; run it again to rebuild incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}

version=$("$PYTHON" - <<'PY'
import re, tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]
print(next(m.group(1) for d in extra if (m := re.fullmatch(r"llama-cpp-python==(\S+)", d))))
PY
)
out=build/llama.cpp
sdist="$out/sdist/llama_cpp_python-$version.tar.gz"
src="$out/src/llama_cpp_python-$version"

if [ ! -f "$sdist" ]; then
  # --no-binary for this package only: `:all:` would also build the sdist's build backend from source.
  "$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" \
    -d "$out/sdist"
fi
if [ ! -d "$src/vendor/llama.cpp" ]; then
  mkdir -p "$out/src"
  tar -xzf "$sdist" -C "$out/src"
fi

echo "building llama-server $version (log: $out/build.log)"
if ! { cmake -S "$src/vendor/llama.cpp" -B "$out/cmake" -DCMAKE_BUILD_TYPE=Release \
         -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF &&
       cmake --build "$out/cmake" --target llama-server llama-bench -j "$JOBS" --verbose; } >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  exit 1
fi
grep -E '^-- (x86|Adding CPU|Including CPU|OpenMP|GGML_)' "$out/build.log" || true
"$out/cmake/bin/llama-server" --version
echo "ggml-cpu compile flags: $(grep -o -- ' -march=[^ ]*\| -m[a-z0-9]*avx[a-z0-9_]*' "$out/build.log" | sort -u | tr -d '\n')"
