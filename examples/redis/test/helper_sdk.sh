# Sourced by the test commands: Antithesis fallback-SDK lines from bash, and redis-cli
# with a time limit. The composer ignores helper_ files.
#
# Each assertion is one JSON line appended to $ANTITHESIS_SDK_LOCAL_OUTPUT, the format
# the Antithesis SDKs write when they run outside Antithesis. Like the SDKs, a process
# declares its assertions first (hit: false) and then reports only the first pass and
# the first failure of each one.

declare -A sdk_reported=()

# JSON string body: backslashes, quotes and control characters escaped.
sdk_json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  printf '"%s"' "${s//[[:cntrl:]]/?}"
}

# sdk_line TYPE DISPLAY MUST_HIT HIT CONDITION MESSAGE DETAILS_JSON
sdk_line() {
  local message
  message=$(sdk_json_string "$6")
  printf '{"antithesis_assert":{"assert_type":"%s","display_type":"%s","condition":%s,"message":%s,"location":{"class":"","function":"main","file":%s,"begin_line":0,"begin_column":0},"hit":%s,"must_hit":%s,"id":%s,"details":%s}}\n' \
    "$1" "$2" "$5" "$message" "$(sdk_json_string "${0##*/}")" "$4" "$3" "$message" "${7:-null}" \
    >>"${ANTITHESIS_SDK_LOCAL_OUTPUT:-/dev/null}"
}

# sdk_report TYPE DISPLAY CONDITION(true|false) MESSAGE [DETAILS_JSON]
sdk_report() {
  local key="$4|$3"
  [[ -n ${sdk_reported[$key]:-} ]] && return 0
  sdk_reported[$key]=1
  sdk_line "$1" "$2" true true "$3" "$4" "${5:-null}"
}

sdk_declare_always() { sdk_line always Always true false true "$1"; }
sdk_declare_sometimes() { sdk_line sometimes Sometimes true false true "$1"; }
sdk_declare_reachable() { sdk_line reachability Reachable true false true "$1"; }
sdk_always() { sdk_report always Always "$@"; }
sdk_sometimes() { sdk_report sometimes Sometimes "$@"; }
sdk_reachable() { sdk_report reachability Reachable true "$@"; }

# The Antithesis "setup complete" signal.
sdk_setup_complete() {
  printf '{"antithesis_setup":{"status":"complete","details":%s}}\n' "${1:-null}" \
    >>"${ANTITHESIS_SDK_LOCAL_OUTPUT:-/dev/null}"
}

# rcli HOST ARGS...: one redis-cli call, at most 2 s (a paused or cut-off server must not
# hold a driver). Prints the raw reply; exit status 0 only when redis-cli ran to the end.
rcli() {
  local host=$1
  shift
  timeout -k 1 2 redis-cli -h "$host" -p 6379 --raw "$@" 2>&1
}

# rcli_session HOST COMMAND...: several commands (one a line, in redis-cli's quoting) on one
# connection, at most 3 s; one reply a line. WAIT must share the connection of the write
# it waits for: it waits for that connection's last write.
rcli_session() {
  local host=$1
  shift
  printf '%s\n' "$@" | timeout -k 1 3 redis-cli -h "$host" -p 6379 --raw 2>&1
}

# is_int VALUE: a (possibly negative) decimal integer.
is_int() { [[ $1 =~ ^-?[0-9]+$ ]]; }
