# shellcheck shell=bash
# with_progress WHAT ESTIMATE LOG CMD...: run a long first-run step with a one-line estimate
# before it and a heartbeat during it (elapsed time and the log's last line every 20 s), so
# a first run never sits silent for minutes. The command's output goes to LOG; on failure
# the log's tail is printed and the step's status returned.
with_progress() {
  local what="$1" estimate="$2" log="$3"
  shift 3
  echo "$what: first run, about $estimate on 2 cores (log: $log)"
  local started=$SECONDS
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( (SECONDS - started) % 20 == 0 )); then
      local last
      last="$(tail -n 1 "$log" 2>/dev/null | cut -c1-100)"
      printf '%s: %dm%02ds elapsed%s\n' "$what" $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) \
        "${last:+ ($last)}"
    fi
  done
  local rc=0
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "$what: failed ($rc) after $((SECONDS - started)) s; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    return "$rc"
  fi
  echo "$what: done in $((SECONDS - started)) s"
}
