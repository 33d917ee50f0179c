#!/usr/bin/env bash
# Installs coda into a temporary prefix and builds examples/hello against it
# twice: with pkg-config (coda.pc) and with CMake (find_package(coda)). Each
# binary must run and print the installed version.
#   tests/install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(find "$tmp/prefix" -name libcoda.so -printf '%h\n' | head -n1)
export PKG_CONFIG_PATH="$libdir/pkgconfig"
export LD_LIBRARY_PATH="$libdir"
# shellcheck disable=SC2046
cc -std=c11 -o "$tmp/hello-pc" "$src/examples/hello/main.c" $(pkg-config --cflags --libs coda)
"$tmp/hello-pc" --check | grep -q '^coda 0\.1\.' || { echo "pkg-config build: wrong output"; exit 1; }
cmake -S "$src/examples/hello" -B "$tmp/hello-build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/hello-build" >/dev/null
"$tmp/hello-build/hello" --check | grep -q '^coda 0\.1\.' || { echo "CMake build: wrong output"; exit 1; }
# coda-admin, the admin API's command line, is installed with the library
# and runs from there.
test -x "$tmp/prefix/bin/coda-admin" || { echo "coda-admin is not installed"; exit 1; }
"$tmp/prefix/bin/coda-admin" --version | grep -q '^coda-admin 0\.1\.' ||
  { echo "installed coda-admin: wrong --version"; exit 1; }
"$tmp/prefix/bin/coda-admin" --help | grep -q 'retry-dead' ||
  { echo "installed coda-admin: no usage"; exit 1; }
# Only the public API is exported from the shared library.
if nm -D --defined-only "$libdir/libcoda.so" | awk '{print $3}' | grep -v '^coda_' | grep -q .; then
  echo "libcoda.so exports symbols outside coda_*:"
  nm -D --defined-only "$libdir/libcoda.so" | awk '{print $3}' | grep -v '^coda_' | head
  exit 1
fi
# The library alone installs: a fresh build tree where only the library
# targets were built (no demo, no libcurl needed) installs without error.
cmake -S "$src" -B "$tmp/lib-only" -DCODA_TESTS=OFF >/dev/null
cmake --build "$tmp/lib-only" --target coda coda_static -j"$(nproc)" >/dev/null
cmake --install "$tmp/lib-only" --prefix "$tmp/prefix-lib" >/dev/null ||
  { echo "installing the library alone failed"; exit 1; }
test -f "$tmp/prefix-lib/include/coda.h" || { echo "library-only install: no coda.h"; exit 1; }
echo "1 passed, 0 failed"
