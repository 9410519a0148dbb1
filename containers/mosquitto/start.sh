#!/bin/sh
# The stack's Mosquitto: on a fresh data volume, the dynamic-security plugin's first file with
# the fleet server as its admin (Mosquitto's own `mosquitto_ctrl dynsec init`); the server
# gives itself its role and adds devices as they enrol. Later starts keep the saved file.
set -eu
file=/mosquitto/data/dynamic-security.json
if [ ! -s "$file" ]; then
  : "${EDGEFLEET_MQTT_USERNAME:?set EDGEFLEET_MQTT_USERNAME}"
  : "${EDGEFLEET_MQTT_PASSWORD:?set EDGEFLEET_MQTT_PASSWORD}"
  mosquitto_ctrl dynsec init "$file" "$EDGEFLEET_MQTT_USERNAME" "$EDGEFLEET_MQTT_PASSWORD" >/dev/null
  # As root (eclipse-mosquitto's default), Mosquitto drops to its own user: the plugin saves
  # every change into this file.
  if [ "$(id -u)" = 0 ]; then chown mosquitto "$file"; fi
fi
exec mosquitto -c /mosquitto/config/mosquitto.conf
