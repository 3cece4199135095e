#!/usr/bin/env bash
# Stop every service of the OpenStack lab (its data stays for the next up.sh).
set -u
LAB=${XMS_LAB_DIR:-/var/lib/xms-lab}/openstack
for pidfile in "$LAB"/run/*.pid; do
  [ -e "$pidfile" ] || continue
  start-stop-daemon --stop --quiet --oknodo --retry 10 --pidfile "$pidfile"
  rm -f "$pidfile"
done
/etc/init.d/rabbitmq-server stop >/dev/null 2>&1
/etc/init.d/mariadb stop >/dev/null 2>&1
exit 0
