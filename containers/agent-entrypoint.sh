#!/bin/sh
# The agent image's entrypoint: enrol once when given an enrollment token, then run the agent.
# Arguments replace `agent run --config $EDGEFLEET_AGENT_CONFIG` (e.g. `agent bench ...`).
set -eu
creds="${EDGEFLEET_CREDENTIALS_FILE:-/var/lib/edgefleet/credentials.json}"
token_file="${EDGEFLEET_ENROLLMENT_TOKEN_FILE:-}"
if [ ! -e "$creds" ] && { [ -n "${EDGEFLEET_ENROLLMENT_TOKEN:-}" ] || [ -n "$token_file" ]; }; then
  : "${EDGEFLEET_SERVER_URL:?EDGEFLEET_SERVER_URL is needed to enrol}"
  if [ -n "$token_file" ]; then
    src="--enrollment-token-file=$token_file"
  else
    src="--enrollment-token=$EDGEFLEET_ENROLLMENT_TOKEN"
  fi
  edgefleet agent enroll --server "$EDGEFLEET_SERVER_URL" "$src" --out "$creds" \
    ${EDGEFLEET_DEVICE_ID:+--device-id "$EDGEFLEET_DEVICE_ID"} \
    ${EDGEFLEET_DEVICE_CLASS:+--class "$EDGEFLEET_DEVICE_CLASS"}
fi
if [ "$#" -eq 0 ]; then
  exec edgefleet agent run --config "${EDGEFLEET_AGENT_CONFIG:-/etc/edgefleet/agent.toml}"
fi
exec edgefleet "$@"
