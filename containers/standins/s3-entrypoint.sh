#!/bin/sh
# MinIO's command line as compose.yaml uses it (`server DIR --address :PORT`), served by moto's
# S3 server. moto accepts any access key and keeps objects in memory: a test stand-in, not a
# store (the data directory is ignored).
set -eu
port=9000
while [ "$#" -gt 0 ]; do
  case "$1" in
    --address) port="${2##*:}"; shift 2 ;;
    --address=*) port="${1##*:}"; shift ;;
    *) shift ;;
  esac
done
exec /opt/moto/bin/moto_server -H 0.0.0.0 -p "$port"
