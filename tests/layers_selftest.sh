#!/usr/bin/env bash
# Self-test of scripts/check-layers: builds small fake src trees in a
# temporary directory (one that keeps the layers, one per kind of
# violation, some with cycles) and checks that the script passes or fails
# on each, naming the offending lines.
#   tests/layers_selftest.sh [path/to/check-layers]
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
check=${1:-$here/../scripts/check-layers}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# put TREE PATH [LINE...]: writes TREE/src/PATH with the given lines.
put() {
  local file=$work/$1/src/$2
  shift 2
  [ -d "${file%/*}" ] || mkdir -p "${file%/*}"
  printf '%s\n' "/* fake */" "$@" >"$file"
}

# A tree that keeps the layers: every allowed kind of include, the public
# header, system headers, same-folder and relative includes.
clean_tree() { # TREE
  local t=$1
  mkdir -p "$work/$t"/src/{common,http,server,app,store,tasks}
  put "$t" common/buf.h '#include "coda.h"' '#include <stddef.h>'
  put "$t" common/buf.c '#include "common/buf.h"' '#include "buf.h"'
  put "$t" common/queue.h
  put "$t" http/parser.h '#include "common/buf.h"'
  put "$t" http/parser.c '#include "http/parser.h"' '# include <string.h>'
  put "$t" server/server.h '#include "http/parser.h"' '#include "common/queue.h"'
  put "$t" server/conn.c '#include "server/server.h"' '#include "conn.h"'
  put "$t" server/conn.h '#include "../common/buf.h"'
  put "$t" app/app.h '#include "server/server.h"' '#include "http/parser.h"'
  put "$t" app/app.c '#include "app/app.h"' '#include <common/queue.h>'
  put "$t" store/store.h '#include "coda.h"' '#include "common/buf.h"'
  put "$t" store/sqlite_store.c '#include "store/store.h"' '#include <sqlite3.h>'
  put "$t" tasks/task.h '#include "app/app.h"' '#include "store/store.h"'
  put "$t" tasks/task.c '#include "tasks/task.h"' '#include "server/server.h"' \
    '#include "http/parser.h"' '#include "common/queue.h"'
}

# expect NAME STATUS [LINE...]: runs the check on tree NAME; it must exit
# with STATUS and print each LINE as a whole line.
expect() {
  local name=$1 want=$2 out status line ok=1
  shift 2
  out=$("$check" "$work/$name/src" 2>&1)
  status=$?
  if [ "$status" -ne "$want" ]; then
    echo "  $name: exit $status, expected $want"
    ok=0
  fi
  for line in "$@"; do
    if ! grep -qxF -- "$line" <<<"$out"; then
      echo "  $name: missing line: $line"
      ok=0
    fi
  done
  if [ "$ok" = 1 ]; then
    passed=$((passed + 1))
    echo "ok   layers_selftest.$name"
  else
    failed=$((failed + 1))
    echo "FAIL layers_selftest.$name"
    while IFS= read -r line; do echo "    | $line"; done <<<"$out"
  fi
}

# violation NAME PATH LINE: a clean tree plus one file with one include.
violation() {
  clean_tree "$1"
  put "$1" "$2" "$3"
}

clean_tree clean
expect clean 0 'check-layers: ok' '  app -> common (1), http (1), server (1)' \
  '  common -> (nothing)' '  http -> common (1)' '  server -> common (2), http (1)' \
  '  store -> common (1)' '  tasks -> app (1), common (1), http (1), server (1), store (1)'

# Each rule, once per kind of include it forbids.
violation server_app server/extra.c '#include "app/app.h"'
expect server_app 1 'src/server/extra.c: #include "app/app.h"' \
  'check-layers: server -> app: server may include only http, common'
violation server_tasks server/extra.c '#include "tasks/task.h"'
expect server_tasks 1 'src/server/extra.c: #include "tasks/task.h"'
violation http_app http/extra.c '#include "app/app.h"'
expect http_app 1 'src/http/extra.c: #include "app/app.h"'
violation http_tasks http/extra.h '#include "tasks/task.h"'
expect http_tasks 1 'src/http/extra.h: #include "tasks/task.h"'
violation http_server http/extra.c '#include "server/server.h"'
expect http_server 1 'src/http/extra.c: #include "server/server.h"'
violation app_tasks app/extra.c '#include "tasks/task.h"'
expect app_tasks 1 'src/app/extra.c: #include "tasks/task.h"' \
  'check-layers: app -> tasks: app may include only server, http, common'
violation common_http common/extra.c '#include "http/parser.h"'
expect common_http 1 'src/common/extra.c: #include "http/parser.h"' \
  'check-layers: common -> http: common may include nothing outside itself'
violation common_store common/extra.h '#include "store/store.h"'
expect common_store 1 'src/common/extra.h: #include "store/store.h"'
violation store_server store/extra.c '#include "server/server.h"'
expect store_server 1 'src/store/extra.c: #include "server/server.h"'
violation store_app store/extra.c '#include "app/app.h"'
expect store_app 1 'src/store/extra.c: #include "app/app.h"'
violation store_tasks store/extra.c '#include "tasks/task.h"'
expect store_tasks 1 'src/store/extra.c: #include "tasks/task.h"' \
  'check-layers: store -> tasks: store may include only common'

# The same include however it is spelled: angle brackets, a relative path,
# spaces after '#', a header that does not exist (yet).
violation angle server/extra.c '#include <tasks/task.h>'
expect angle 1 'src/server/extra.c: #include <tasks/task.h>'
violation relative server/extra.c '#include "../tasks/task.h"'
expect relative 1 'src/server/extra.c: #include "../tasks/task.h"'
violation spaced app/extra.c '  #  include "tasks/task.h"'
expect spaced 1 'src/app/extra.c: #include "tasks/task.h"'
violation missing_header app/extra.c '#include "tasks/not_there.h"'
expect missing_header 1 'src/app/extra.c: #include "tasks/not_there.h"'

# Every offending line is printed, not only the first.
clean_tree several
put several server/a.c '#include "app/app.h"' '#include "tasks/task.h"'
put several app/b.c '#include "tasks/task.h"'
expect several 1 'src/app/b.c: #include "tasks/task.h"' 'src/server/a.c: #include "app/app.h"' \
  'src/server/a.c: #include "tasks/task.h"'

# A cycle between two layers.
clean_tree cycle
put cycle http/extra.c '#include "server/server.h"'
expect cycle 1 'check-layers: cycle: http -> server -> http' \
  'src/http/extra.c: #include "server/server.h"' 'src/server/server.h: #include "http/parser.h"'

# A cycle through folders with no layer, where only the cycle check
# applies: x -> y -> z -> x, each folder including the next.
clean_tree indirect
put indirect x/x.h '#include "y/y.h"'
put indirect y/y.h '#include "z/z.h"'
put indirect z/z.h '#include "x/x.h"'
expect indirect 1 'check-layers: cycle: x -> y -> z -> x' 'src/z/z.h: #include "x/x.h"' \
  'check-layers: FAILED: 0 include(s) against the layers, 1 cycle(s)'

# Folders with no layer and no cycle pass, with a note.
clean_tree unlayered
put unlayered x/x.h '#include "y/y.h"' '#include "common/buf.h"'
put unlayered y/y.h
expect unlayered 0 'check-layers: ok' '  x -> common (1), y (1)' \
  'check-layers: note: src/x has no layer in scripts/check-layers; only the cycle check applies to it'

# A layer may not include a folder that has no layer.
clean_tree into_unlayered
put into_unlayered x/x.h
put into_unlayered server/extra.c '#include "x/x.h"'
expect into_unlayered 1 'src/server/extra.c: #include "x/x.h"'

# An empty tree passes; a missing one is a usage error.
mkdir -p "$work/empty/src"
expect empty 0 'check-layers: ok'
expect nowhere 2

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
