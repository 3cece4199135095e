#!/usr/bin/env bash
# Stop every service of the OpenStack lab (its data stays for the next up.sh).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RUN=${XMS_LAB_DIR:-/var/lib/xms-lab}/openstack/run
# shellcheck source=lab/pidfile.sh
. "$HERE/../pidfile.sh"
for pidfile in "$RUN"/*.pid; do
  [ -e "$pidfile" ] || continue
  cmd=${pidfile%.pid}.cmd
  # Only a process that still runs what up.sh started is ours to stop (lab/pidfile.sh).
  if [ -s "$cmd" ] && pid_runs "$pidfile" "$(cat "$cmd")"; then
    start-stop-daemon --stop --quiet --oknodo --retry 10 --pidfile "$pidfile"
  fi
  rm -f "$pidfile"
done
/etc/init.d/rabbitmq-server stop >/dev/null 2>&1
/etc/init.d/mariadb stop >/dev/null 2>&1
exit 0
