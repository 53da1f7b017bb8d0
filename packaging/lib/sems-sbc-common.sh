# Shared by the sems-sbc-* tools (sourced, not run). The admin API's address and token come
# from SBC_ADMIN_URL / SBC_ADMIN_TOKEN, else /etc/sbc/admin.env, else http://127.0.0.1:8090;
# the token, when still unset, from /etc/sbc/admin.token (the package creates it). Over HTTPS
# (admin.tls), SBC_ADMIN_CACERT names the CA of the API's certificate, and SBC_ADMIN_CERT and
# SBC_ADMIN_KEY the tool's own certificate when the API requires one.
set -u
if [ -z "${SBC_ADMIN_URL:-}" ] && [ -r /etc/sbc/admin.env ]; then
  # shellcheck disable=SC1091
  . /etc/sbc/admin.env
fi
SBC_ADMIN_URL=${SBC_ADMIN_URL:-http://127.0.0.1:8090}
SBC_ADMIN_TOKEN=${SBC_ADMIN_TOKEN:-}
if [ -z "$SBC_ADMIN_TOKEN" ] && [ -r /etc/sbc/admin.token ]; then
  SBC_ADMIN_TOKEN=$(tr -d '[:space:]' < /etc/sbc/admin.token)
fi

usage() { echo "usage: $(basename "$0") $1" >&2; exit 1; }

# api METHOD PATH [JSON]: the response body goes to $BODY, the HTTP status to $STATUS, and the
# cluster nodes that did not apply a change (X-Sbc-Cluster-Failures) to $CLUSTER_FAILURES.
api() {
  local out rest
  local args=(-sS -X "$1" -H 'Content-Type: application/json' -w '\n%header{x-sbc-cluster-failures}\n%{http_code}')
  [ $# -ge 3 ] && args+=(--data-binary "$3")
  [ -n "${SBC_ADMIN_CACERT:-}" ] && args+=(--cacert "$SBC_ADMIN_CACERT")
  [ -n "${SBC_ADMIN_CERT:-}" ] && args+=(--cert "$SBC_ADMIN_CERT")
  [ -n "${SBC_ADMIN_KEY:-}" ] && args+=(--key "$SBC_ADMIN_KEY")
  # The token goes to curl on stdin (`-K -`): on the command line every user would see it (ps).
  local auth=""
  [ -n "$SBC_ADMIN_TOKEN" ] && auth="header = \"Authorization: Bearer $SBC_ADMIN_TOKEN\""
  if ! out=$(printf '%s\n' "$auth" | curl -K - "${args[@]}" "$SBC_ADMIN_URL$2" 2>&1); then
    echo "Error: cannot reach the SBC at $SBC_ADMIN_URL: $out" >&2
    exit 2
  fi
  STATUS=${out##*$'\n'}
  rest=${out%$'\n'*}
  CLUSTER_FAILURES=${rest##*$'\n'}
  BODY=${rest%$'\n'*}
}

# Stops with the API's error message unless the last call succeeded; in cluster mode, also
# when a node did not apply the change (it is applied on the node the tool talks to).
check() {
  case "$STATUS" in
    2*) ;;
    *) echo "Error: $(printf '%s' "$BODY" | jq -r '.error // .' 2>/dev/null || printf '%s' "$BODY") (HTTP $STATUS)" >&2
       exit 2 ;;
  esac
  if [ -n "$CLUSTER_FAILURES" ]; then
    echo "Error: applied on this node, not on other cluster nodes: $CLUSTER_FAILURES" >&2
    exit 3
  fi
}

# As the SEMS tools do, first the number of active calls.
active_calls() {
  api GET /health
  echo "Active calls: $(printf '%s' "$BODY" | jq -r '.calls')"
}

# A URL path segment from a shell string.
uri() { jq -rn --arg v "$1" '$v | @uri'; }

# A JSON string from a shell string.
json_str() { printf '%s' "$1" | jq -Rs .; }
