# Shared helpers for the benchmark scripts (sourced, not run). The caller sets `tmp` (its
# temp dir), `DURATION` (seconds per measured run) and the array `servers` (pids the EXIT
# trap must stop), and defines `die`.
# shellcheck shell=bash

# Reads a variable by name; empty when unset.
get() { eval "echo \"\${$1:-}\""; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Stops one server: TERM, up to 5 s for it to exit, then KILL it and its children. Returns
# the server's exit status and removes it from `servers`.
stop_server() {
  local pid=$1 kids i status=0
  kids=$(pgrep -P "$pid" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    case $(ps -o stat= -p "$pid" 2>/dev/null) in '' | Z*) break ;; esac
    sleep 0.1
  done
  if ((i == 50)); then
    echo "bench: pid $pid ignored SIGTERM for 5 s; killing it" >&2
    # shellcheck disable=SC2086 # kids is a list of pids
    kill -KILL "$pid" $kids 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || status=$?
  local rest=()
  for i in "${servers[@]}"; do [ "$i" = "$pid" ] || rest+=("$i"); done
  servers=("${rest[@]}")
  return "$status"
}

# CPU time (ticks) of a process and its children (worker processes).
cpu_ticks() {
  local pid total=0 fields
  for pid in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    fields=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    # After the command name: field 12 is utime, 13 stime (stat(5) fields 14 and 15).
    total=$((total + $(echo "$fields" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# TICKS of CPU time over SECONDS (default DURATION), in % of one core.
percent() {
  awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v d="${2:-$DURATION}" \
    'BEGIN {printf "%.0f", 100 * t / hz / d}'
}

# CPU ticks used so far by the script's reaped children (the load generators). `times`
# must run in this shell, not in a $(...) subshell, whose counters start at zero; call it
# as `children_ticks >"$tmp/ticks"`.
children_ticks() {
  times >"${tmp:?}/times"
  awk -v hz="$(getconf CLK_TCK)" 'NR == 2 {
    split($1, u, /[ms]/); split($2, s, /[ms]/)
    printf "%.0f", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * hz }' "$tmp/times"
}

# Busy (not idle) ticks of the whole machine so far: online CPUs x uptime - idle time,
# from /proc/uptime. Idle time is measured when CPUs enter and leave idle, while the
# user/system columns of /proc/stat are sampled at timer ticks and miss most of the short
# bursts of a server at a moderate request rate (they undercounted by 20-40% of a core
# on the dev VM, making `other` negative). Steal counts as busy: time taken from us by
# the hypervisor (steal_ticks reports it on its own: on a shared VM it is the usual
# reason for a disturbed run).
steal_ticks() { awk '$1 == "cpu" {print $9}' /proc/stat; }

machine_ticks() {
  awk -v n="$(getconf _NPROCESSORS_ONLN)" -v hz="$(getconf CLK_TCK)" \
    '{printf "%.0f", (n * $1 - $2) * hz}' /proc/uptime
}

# Waits up to 15 s for http://127.0.0.1:PORT/plain to answer 200 with BODY; dies otherwise.
check_server() {
  local name=$1 pid=$2 port=$3 want=$4 code="" body i
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/$name.log" >&2; die "$name exited during start-up"; }
    code=$(curl -s --noproxy '*' --max-time 2 -o "$tmp/$name.body" -w '%{http_code}' \
      "http://127.0.0.1:$port/plain" || true)
    [ "$code" = 000 ] || break
    sleep 0.1
  done
  body=$(cat "$tmp/$name.body" 2>/dev/null || true)
  if [ "$code" != 200 ] || [ "$body" != "$want" ]; then
    cat "$tmp/$name.log" >&2
    die "$name on 127.0.0.1:$port answered GET /plain with status $code, body '${body:0:200}'"
  fi
}

# ratio A B: A/B as "1.23x", or "-" when B is 0 or missing.
ratio() {
  awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "-"}'
}
