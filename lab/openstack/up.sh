#!/usr/bin/env bash
# A real single-node OpenStack (Debian 12's Zed packages) for the tests and the demo:
# Keystone, Barbican (simple crypto back-end: the key manager of encrypted volume
# types), Cinder (four NFS back-ends on local directories), Placement, Nova (compute1
# in az1 boots instances with libvirt on QEMU; compute2 in az2 is a fake-driver host),
# Neutron (ML2 with the linuxbridge agent and the DHCP agent on two flat provider
# networks whose bridges the host has an address on), MariaDB, RabbitMQ. Idempotent: a second run on a running lab only checks
# it and the resources the tests need. Listens on 127.0.0.1 only.
# Writes ${XMS_LAB_DIR}/openstack/clouds.yaml (0600). ./down.sh stops it all.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export XMS_LAB_DIR=${XMS_LAB_DIR:-/var/lib/xms-lab}
export DEBIAN_FRONTEND=noninteractive
LAB=$XMS_LAB_DIR/openstack
RUN=$LAB/run
PY=${XMS_VENV:-$ROOT/.venv}/bin/python
mkdir -p "$RUN"
chmod 700 "$LAB"
T0=$(date +%s)
step() { echo "[openstack $(($(date +%s) - T0))s] $*"; }
DB="mysql+pymysql://os:os@127.0.0.1"
TURL="rabbit://os:os@127.0.0.1:5672/"
# Service passwords only guard a lab on loopback; the clouds.yaml that holds them is 0600.
ADMIN_PW=lab-admin

# The packages must not start their daemons (no systemd here; this script starts them).
policy_rc=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  policy_rc=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' >"$policy_rc" && chmod +x "$policy_rc"
fi
APT_LOG=$LAB/apt.log bash "$ROOT/scripts/apt-install.sh" lab-openstack
[ -z "$policy_rc" ] || rm -f "$policy_rc"

# shellcheck source=lab/pidfile.sh
. "$HERE/../pidfile.sh"
# A daemon runs if its pid file names a process running the command it was started with ($RUN/NAME.cmd).
running() { [ -s "$RUN/$1.cmd" ] && pid_runs "$RUN/$1.pid" "$(cat "$RUN/$1.cmd")"; }
daemon() { # name user command...
  local name=$1 user=$2; shift 2
  running "$name" && return 0
  # A stale pid file would make start-stop-daemon take its stranger for the daemon, too.
  rm -f "$RUN/$name.pid" && echo "$*" >"$RUN/$name.cmd"
  start-stop-daemon --start --quiet --background --make-pidfile --pidfile "$RUN/$name.pid" \
    --chuid "$user" --output "$LAB/$name.log" --startas "$1" -- "${@:2}"
}
pin() { # name dir: a process whose working directory is dir, so that dir cannot be unmounted
  running "$1" && return 0
  rm -f "$RUN/$1.pid" && echo "/bin/sleep infinity" >"$RUN/$1.cmd"
  start-stop-daemon --start --quiet --background --make-pidfile --pidfile "$RUN/$1.pid" --chdir "$2" \
    --startas /bin/sleep -- infinity
}
uwsgi_app() { # name port wsgi-script user [processes threads]
  cat >"$RUN/$1.ini" <<INI
[uwsgi]
http-socket = 127.0.0.1:$2
wsgi-file = $3
plugins = python3
master = true
processes = ${5:-1}
threads = ${6:-4}
lazy-apps = true
enable-threads = true
buffer-size = 65535
http-raw-body = true
wsgi-manage-chunked-input = true
add-header = Connection: close
uid = $4
gid = $4
die-on-term = true
INI
  daemon "$1" root /usr/bin/uwsgi --ini "$RUN/$1.ini"
}
authtoken() { # service user (its password is its name)
  printf 'auth_url = http://127.0.0.1:5000\nauth_type = password\nproject_domain_name = Default\n'
  printf 'user_domain_name = Default\nproject_name = service\nregion_name = RegionOne\nusername = %s\npassword = %s\n' "$1" "$1"
}
wait_http() { for _ in $(seq 120); do curl -sf -o /dev/null "$1" && return 0; sleep 1; done; echo "timeout: $1" >&2; return 1; }

step "mariadb + rabbitmq"
pgrep -x mariadbd >/dev/null || /etc/init.d/mariadb start >/dev/null
pgrep -f 'beam.smp.*rabbit' >/dev/null || /etc/init.d/rabbitmq-server start >/dev/null
for d in keystone barbican cinder nova_api nova nova_cell0 placement neutron; do mysql -uroot -e "CREATE DATABASE IF NOT EXISTS $d"; done
mysql -uroot -e "CREATE USER IF NOT EXISTS 'os'@'127.0.0.1' IDENTIFIED BY 'os'; GRANT ALL ON *.* TO 'os'@'127.0.0.1'; FLUSH PRIVILEGES;"
users=$(rabbitmqctl list_users -q 2>/dev/null)
grep -q '^os' <<<"$users" || rabbitmqctl add_user os os >/dev/null
rabbitmqctl set_permissions os '.*' '.*' '.*' >/dev/null

step "keystone"
if ! running keystone; then
  printf '[DEFAULT]\nlog_dir = /var/log/keystone\n[database]\nconnection = %s/keystone\n[token]\nprovider = fernet\n' "$DB" >/etc/keystone/keystone.conf
  su -s /bin/sh -c "keystone-manage db_sync" keystone
  keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone
  keystone-manage credential_setup --keystone-user keystone --keystone-group keystone
  keystone-manage bootstrap --bootstrap-password "$ADMIN_PW" --bootstrap-region-id RegionOne \
    --bootstrap-admin-url http://127.0.0.1:5000/v3/ --bootstrap-internal-url http://127.0.0.1:5000/v3/ \
    --bootstrap-public-url http://127.0.0.1:5000/v3/
  uwsgi_app keystone 5000 /usr/bin/keystone-wsgi-public keystone
fi
wait_http http://127.0.0.1:5000/v3
XMS_ADMIN_PW=$ADMIN_PW "$PY" "$HERE/identity.py"

step "barbican"
# Cinder and Nova reach it through castellan with the user's own token: the secret of an
# encrypted volume belongs to the volume's project. Secure-RBAC defaults, so that a plain
# project member may create and read its project's secrets (the legacy rules want 'creator').
KEK=$LAB/barbican-kek
[ -s "$KEK" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$KEK")
if ! running barbican-api; then
  cat >/etc/barbican/barbican.conf <<INI
[DEFAULT]
host_href = http://127.0.0.1:9311
log_dir = /var/log/barbican
transport_url = $TURL
sql_connection = $DB/barbican
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000
$(authtoken barbican)
[oslo_policy]
enforce_new_defaults = true
enforce_scope = false
[secretstore]
enabled_secretstore_plugins = store_crypto
[crypto]
enabled_crypto_plugins = simple_crypto
[simple_crypto_plugin]
kek = $(cat "$KEK")
INI
  chown root:barbican /etc/barbican/barbican.conf && chmod 640 /etc/barbican/barbican.conf
  mkdir -p /var/log/barbican && chown barbican:barbican /var/log/barbican
  su -s /bin/sh -c "barbican-manage db upgrade" barbican >"$LAB/barbican-db.log" 2>&1
  uwsgi_app barbican-api 9311 /usr/bin/barbican-wsgi-api barbican
fi
wait_http http://127.0.0.1:9311/
# castellan, as configured in cinder.conf and nova.conf
key_manager() { printf '[key_manager]\nbackend = barbican\n[barbican]\nauth_endpoint = http://127.0.0.1:5000/v3\nbarbican_endpoint_type = public\n'; }

step "cinder"
BACKENDS=(ssd1:ssd:az1 nvme1:nvme:az1 hdd2:hdd:az2 ssd2:ssd:az2)
# physical network:host interface:gateway of lab-net-a and lab-net-b (resources.py makes them flat networks)
PROVIDER_NETS=(lab-a:xms-lab-a:10.10.1.1 lab-b:xms-lab-b:10.10.2.1)
: >"$RUN/cinder-backends.conf"
for spec in "${BACKENDS[@]}"; do
  IFS=: read -r name kind zone <<<"$spec"
  share=127.0.0.1:/srv/xms-lab/cinder-$name
  mnt=/var/lib/cinder/mnt/$(echo -n "$share" | md5sum | cut -d' ' -f1)
  mkdir -p "/srv/xms-lab/cinder-$name" "$mnt"
  mountpoint -q "$mnt" || mount --bind "/srv/xms-lab/cinder-$name" "$mnt"  # os-brick finds it mounted: no NFS
  # and where Nova's libvirt driver looks for the same share when it attaches a volume to an instance. Nova
  # asks os.path.ismount, which cannot see a bind mount within one file system: the mount points' parent is
  # a tmpfs of its own. Nova also unmounts a share its last volume left and mounts it again (mount -t nfs,
  # which this kernel lacks): a process of the lab's sits in each, so that unmount fails (Nova logs it and
  # keeps the share).
  mountpoint -q /var/lib/nova/mnt || { mkdir -p /var/lib/nova/mnt && mount -t tmpfs -o size=1m,mode=755 xms-lab-nova-mnt /var/lib/nova/mnt; }
  nova_mnt=/var/lib/nova/mnt/$(echo -n "$share" | md5sum | cut -d' ' -f1)
  mkdir -p "$nova_mnt"
  mountpoint -q "$nova_mnt" || mount --bind "/srv/xms-lab/cinder-$name" "$nova_mnt"
  pin "nova-share-$name" "$nova_mnt"
  echo "$share" >"/etc/cinder/nfs_shares_$name"
  chown root:cinder "/etc/cinder/nfs_shares_$name" && chmod 640 "/etc/cinder/nfs_shares_$name"
  cat >>"$RUN/cinder-backends.conf" <<INI
[$name]
volume_driver = cinder.volume.drivers.nfs.NfsDriver
volume_backend_name = $kind
backend_availability_zone = $zone
nfs_shares_config = /etc/cinder/nfs_shares_$name
nfs_mount_point_base = /var/lib/cinder/mnt
nfs_sparsed_volumes = true
nfs_qcow2_volumes = false
nfs_snapshot_support = true
nas_secure_file_operations = false
nas_secure_file_permissions = false
INI
done
mkdir -p /var/lib/cinder/tmp && chown -R cinder:cinder /var/lib/cinder /srv/xms-lab
# Debian 12's qemu-img fails LUKS creation at random (see qemu-img-retry): Cinder's root commands use a retrying one.
install -D -m 755 "$HERE/qemu-img-retry" /usr/local/lib/xms-lab/bin/qemu-img
grep -q '^exec_dirs=/usr/local/lib/xms-lab/bin,' /etc/cinder/rootwrap.conf ||
  sed -i 's|^exec_dirs=|exec_dirs=/usr/local/lib/xms-lab/bin,|' /etc/cinder/rootwrap.conf
# Each root command of Cinder is a Python start of cinder-rootwrap (a wave's attachments and volumes run
# dozens), and Debian's importing eventlet (green DNS, then setuptools' distutils shim and pkg_resources)
# costs 0.55 CPU-s of it; with these two settings 0.09. This lab's Cinder shares the conversion hosts'
# cores, which a production one does not (lab/openstack/README.md). cinder-volume runs them; sudo keeps them.
printf '%s\n' 'Defaults:cinder secure_path="/usr/local/lib/xms-lab/bin:/usr/sbin:/usr/bin:/sbin:/bin"' \
  'Defaults:cinder env_keep += "EVENTLET_NO_GREENDNS SETUPTOOLS_USE_DISTUTILS"' >/etc/sudoers.d/xms-lab-cinder
chmod 440 /etc/sudoers.d/xms-lab-cinder
if ! running cinder-volume; then
  cat >/etc/cinder/cinder.conf <<INI
[DEFAULT]
transport_url = $TURL
auth_strategy = keystone
my_ip = 127.0.0.1
host = cinderhost
state_path = /var/lib/cinder
log_dir = /var/log/cinder
enabled_backends = ssd1,nvme1,hdd2,ssd2
default_volume_type = standard-ssd
default_availability_zone = az1
storage_availability_zone = az1
allow_availability_zone_fallback = false
rootwrap_config = /etc/cinder/rootwrap.conf
api_paste_config = /etc/cinder/api-paste.ini
[database]
connection = $DB/cinder
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000
$(authtoken cinder)
[oslo_concurrency]
lock_path = /var/lib/cinder/tmp
[nova]
# the NFS driver asks Nova to snapshot a volume in use (os-assisted-volume-snapshots: an admin's call)
$(authtoken cinder)
$(key_manager)
$(cat "$RUN/cinder-backends.conf")
INI
  su -s /bin/sh -c "cinder-manage db sync" cinder
  # Two processes: a wave attaches its volumes at once (lab/openstack/README.md).
  uwsgi_app cinder-api 8776 /usr/bin/cinder-wsgi cinder 2 4
  daemon cinder-scheduler cinder /usr/bin/cinder-scheduler --config-file /etc/cinder/cinder.conf
  EVENTLET_NO_GREENDNS=yes SETUPTOOLS_USE_DISTUTILS=stdlib \
    daemon cinder-volume cinder /usr/bin/cinder-volume --config-file /etc/cinder/cinder.conf
fi

step "placement"
if ! running placement; then
  printf '[DEFAULT]\nlog_dir = /var/log/placement\n[api]\nauth_strategy = keystone\n[keystone_authtoken]\n%s\n[placement_database]\nconnection = %s/placement\n' \
    "$(authtoken placement)" "$DB" >/etc/placement/placement.conf
  mkdir -p /var/log/placement && chown placement:placement /var/log/placement
  su -s /bin/sh -c "placement-manage db sync" placement
  uwsgi_app placement 8778 /usr/bin/placement-api placement
fi

step "neutron"
if ! running neutron-server; then
  HERE=$HERE "$PY" - <<'PYEOF'
# The agentless ML2 binding driver: a plain module plus an entry point, next to Debian's neutron.
import os, shutil
site = "/usr/local/lib/python3.11/dist-packages"
os.makedirs(f"{site}/xms_lab_noop_mech-0.1.dist-info", exist_ok=True)
shutil.copy(os.path.join(os.environ.get("HERE", "."), "noop_mech.py"), f"{site}/xms_lab_noop_mech.py")
with open(f"{site}/xms_lab_noop_mech-0.1.dist-info/METADATA", "w") as f:
    f.write("Metadata-Version: 2.1\nName: xms-lab-noop-mech\nVersion: 0.1\n")
with open(f"{site}/xms_lab_noop_mech-0.1.dist-info/entry_points.txt", "w") as f:
    f.write("[neutron.ml2.mechanism_drivers]\nxms_noop = xms_lab_noop_mech:NoopBindMechanismDriver\n")
PYEOF
  cat >/etc/neutron/neutron.conf <<INI
[DEFAULT]
core_plugin = ml2
service_plugins =
auth_strategy = keystone
transport_url = $TURL
bind_host = 127.0.0.1
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
log_dir = /var/log/neutron
state_path = /var/lib/neutron
[database]
connection = $DB/neutron
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000
$(authtoken neutron)
[nova]
$(authtoken nova)
[oslo_concurrency]
lock_path = /var/lib/neutron/tmp
[experimental]
# Neutron 21 (Zed) calls its linuxbridge driver and agent experimental: they stay supported, and need no
# Open vSwitch (whose daemons the lab would have to run as well)
linuxbridge = true
INI
  cat >/etc/neutron/plugins/ml2/ml2_conf.ini <<INI
[ml2]
type_drivers = flat,vxlan
tenant_network_types = vxlan
mechanism_drivers = linuxbridge,xms_noop
extension_drivers = port_security
[ml2_type_flat]
flat_networks = *
[ml2_type_vxlan]
vni_ranges = 1:1000
[securitygroup]
firewall_driver = noop
INI
  mkdir -p /var/lib/neutron/tmp && chown -R neutron:neutron /var/lib/neutron
  su -s /bin/sh -c "neutron-db-manage --config-file /etc/neutron/neutron.conf --config-file /etc/neutron/plugins/ml2/ml2_conf.ini upgrade head" neutron >"$LAB/neutron-db.log" 2>&1
  daemon neutron-server neutron /usr/bin/neutron-server --config-file /etc/neutron/neutron.conf --config-file /etc/neutron/plugins/ml2/ml2_conf.ini
fi
# The data plane of compute1: per flat provider network a veth pair, one end holding the subnet's gateway
# address as this host's (the tests, as conversion host, reach instances at their fixed IPs through it), the
# other the network's "physical interface": the linuxbridge agent puts it in the network's bridge, beside the
# instances' taps (plugged by Nova) and the DHCP agent's (dnsmasq in a namespace). Not bridge_mappings: Zed's
# linuxbridge driver does not tell Nova the mapped bridge's name, so Nova's taps would land elsewhere.
for spec in "${PROVIDER_NETS[@]}"; do
  IFS=: read -r _physnet host_end gateway <<<"$spec"
  ip link show "$host_end" >/dev/null 2>&1 || ip link add "$host_end" type veth peer name "$host_end-p"
  ip -4 addr show dev "$host_end" | grep -q " $gateway/" || ip addr add "$gateway/24" dev "$host_end"
  ip link set "$host_end" up && ip link set "$host_end-p" up
done
mappings=$(for spec in "${PROVIDER_NETS[@]}"; do IFS=: read -r p h _ <<<"$spec"; echo "$p:$h-p"; done | paste -sd,)
cat >/etc/neutron/plugins/ml2/linuxbridge_agent.ini <<INI
[DEFAULT]
host = compute1
[linux_bridge]
physical_interface_mappings = $mappings
[vxlan]
enable_vxlan = false
[securitygroup]
enable_security_group = false
firewall_driver = noop
INI
cat >/etc/neutron/dhcp_agent.ini <<INI
[DEFAULT]
host = compute1
interface_driver = linuxbridge
dhcp_driver = neutron.agent.linux.dhcp.Dnsmasq
enable_isolated_metadata = false
INI
daemon neutron-linuxbridge-agent root /usr/bin/neutron-linuxbridge-agent --config-file /etc/neutron/neutron.conf \
  --config-file /etc/neutron/plugins/ml2/linuxbridge_agent.ini
daemon neutron-dhcp-agent root /usr/bin/neutron-dhcp-agent --config-file /etc/neutron/neutron.conf \
  --config-file /etc/neutron/dhcp_agent.ini

step "nova"
if ! running nova-api; then
  cat >/etc/nova/nova.conf <<INI
[DEFAULT]
transport_url = $TURL
my_ip = 127.0.0.1
state_path = /var/lib/nova
log_dir = /var/log/nova
enabled_apis = osapi_compute
[api]
auth_strategy = keystone
[api_database]
connection = $DB/nova_api
[database]
connection = $DB/nova
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 10
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000
$(authtoken nova)
[service_user]
send_service_user_token = true
$(authtoken nova)
[placement]
$(authtoken placement)
[neutron]
$(authtoken neutron)
[cinder]
os_region_name = RegionOne
cross_az_attach = true
[glance]
# never contacted when booting from volumes, but nova wants an image endpoint configured
api_servers = http://127.0.0.1:9292
[oslo_concurrency]
lock_path = /var/lib/nova/tmp
$(key_manager)
[vnc]
# a console as every cloud has: it also gives instances a video device, without which Debian 12's SeaBIOS
# never leaves SMM under TCG (the guest sits at its first instruction)
enabled = true
server_listen = 127.0.0.1
server_proxyclient_address = 127.0.0.1
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
INI
  # compute1 boots instances (QEMU's TCG: this machine's KVM is unusable); compute2 is a fake-driver host, kept
  # for the tests of a second availability zone, which need no boot (lab/openstack/README.md).
  cat >/etc/nova/nova-compute1.conf <<INI
[DEFAULT]
host = compute1
compute_driver = libvirt.LibvirtDriver
instances_path = /var/lib/nova/instances
# The lab's guests are small and mostly idle: room for a wave's instances and those a failed test left behind.
cpu_allocation_ratio = 16.0
ram_allocation_ratio = 2.0
[libvirt]
virt_type = qemu
# QEMU's own CPU model: libvirt's host-model expands to this host's features (5-level paging, PKS, ...),
# which TCG does not emulate, and SeaBIOS never got past them
cpu_mode = none
nfs_mount_point_base = /var/lib/nova/mnt
INI
  printf '[DEFAULT]\nhost = compute2\ncompute_driver = fake.FakeDriver\n' >/etc/nova/nova-compute2.conf
  printf '#!/usr/bin/python3\nimport sys\nfrom nova.cmd.compute import main\nsys.exit(main())\n' >/usr/local/bin/xms-lab-nova-compute
  chmod 755 /usr/local/bin/xms-lab-nova-compute
  mkdir -p /var/lib/nova/tmp && chown -R nova:nova /var/lib/nova
  nm() { su -s /bin/sh -c "nova-manage $*" nova >>"$LAB/nova-manage.log" 2>&1; }
  nm api_db sync
  nm cell_v2 map_cell0 --database_connection "$DB/nova_cell0"
  cells=$(su -s /bin/sh -c "nova-manage cell_v2 list_cells" nova 2>/dev/null)  # not piped: grep -q would SIGPIPE it
  grep -q ' cell1 ' <<<"$cells" || nm cell_v2 create_cell --name=cell1
  nm db sync
  # nova-api monkey-patches eventlet: several uwsgi threads in one process deadlocked on
  # concurrent server creates (one POST /servers never answered); processes instead.
  uwsgi_app nova-api 8774 /usr/bin/nova-api-wsgi nova 3 1
  daemon nova-conductor nova /usr/bin/nova-conductor --config-file /etc/nova/nova.conf
  daemon nova-scheduler nova /usr/bin/nova-scheduler --config-file /etc/nova/nova.conf
fi
# libvirt for compute1 (no systemd here to socket-activate it, and no D-Bus for polkit: the libvirt group,
# which nova-compute's user is in, is what lets it use the read-write socket)
printf '%s\n' 'unix_sock_group = "libvirt"' 'unix_sock_rw_perms = "0770"' 'auth_unix_ro = "none"' \
  'auth_unix_rw = "none"' >"$RUN/libvirtd.conf"
daemon virtlogd root /usr/sbin/virtlogd
daemon libvirtd root /usr/sbin/libvirtd --config "$RUN/libvirtd.conf"
for _ in $(seq 100); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.1; done
for host in compute1 compute2; do
  daemon "nova-compute-$host" nova /usr/local/bin/xms-lab-nova-compute --config-file /etc/nova/nova.conf --config-file "/etc/nova/nova-$host.conf"
done

step "waiting for the services"
for port in 9311 8776 8778 9696 8774; do wait_http "http://127.0.0.1:$port/"; done
XMS_ADMIN_PW=$ADMIN_PW "$PY" "$HERE/resources.py"
su -s /bin/sh -c "nova-manage cell_v2 discover_hosts" nova >>"$LAB/nova-manage.log" 2>&1
XMS_ADMIN_PW=$ADMIN_PW "$PY" "$HERE/resources.py" --zones
# Nova mirrors a host's aggregates into Placement by a resource provider named as the host; libvirt names
# compute1's provider as this machine, so Placement would place nothing in az1 until synced by compute node.
su -s /bin/sh -c "nova-manage placement sync_aggregates" nova >>"$LAB/nova-manage.log" 2>&1
step "up: clouds in $LAB/clouds.yaml"
