#!/bin/bash
# A single-node Slurm test cluster on this machine: partitions `cpu` (default) and `gpu`,
# one dummy GPU, no accounting. Installs nothing: needs Debian's `slurm-wlm` and `munge`
# (apt-get install slurm-wlm munge) and root. Runs without systemd.
#   slurm/local/start.sh [start|stop|status]
# start also restarts a running test cluster with the current slurm.conf / gres.conf.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
H=$(hostname -s)
MARK="crystalrl single-node test cluster"

stop() {
  local f pid
  for f in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/munge/munged.pid; do
    pid=$(cat "$f" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for f in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/munge/munged.pid; do
    pid=$(cat "$f" 2>/dev/null || true)
    for _ in $(seq 50); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    rm -f "$f"
  done
}

case "${1:-start}" in
  stop) stop; exit 0 ;;
  status) exec sinfo ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

for cmd in slurmctld slurmd munged sinfo; do
  command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || {
    echo "$0: $cmd not found; install Slurm first: apt-get install slurm-wlm munge" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "$0: must run as root (it starts slurmctld, slurmd and munged)" >&2; exit 1; }
# never overwrite a real cluster's configuration
if [ -e /etc/slurm/slurm.conf ] && ! grep -q "$MARK" /etc/slurm/slurm.conf; then
  echo "$0: /etc/slurm/slurm.conf exists and is not this project's test cluster; leaving it alone" >&2
  exit 1
fi
stop

# --- munge (authentication between the daemons and the commands)
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge; chmod 755 /run/munge
runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null

# --- configuration: this host, and its CPUs and memory as slurmd measures them
NODE=$(/usr/sbin/slurmd -C | head -1)
mkdir -p /etc/slurm
sed "s/@HOST@/$H/g; s/^@NODE@/$NODE/" "$HERE/slurm.conf" > /etc/slurm/slurm.conf
sed "s/@HOST@/$H/g" "$HERE/gres.conf" > /etc/slurm/gres.conf
# dummy GPU: a character device (a copy of /dev/null), see gres.conf
[ -c /dev/fakegpu0 ] || { rm -f /dev/fakegpu0; mknod -m 666 /dev/fakegpu0 c 1 3; }
mkdir -p /run/slurm /var/log/slurm /var/spool/slurmd /var/spool/slurmctld

# --- daemons (root; they daemonise and write /run/slurm/*.pid)
/usr/sbin/slurmctld
for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
/usr/sbin/slurmd
for _ in $(seq 100); do
  state=$(sinfo -h -n "$H" -o %T 2>/dev/null | head -1 || true)
  case "$state" in
    idle*|mixed*|alloc*) break ;;
    # a node that once registered with a bad config stays drained until resumed
    drain*|inval*) scontrol update nodename="$H" state=resume ;;
  esac
  sleep 0.3
done
state=$(sinfo -h -n "$H" -o %T | head -1 || true)
case "$state" in
  idle*|mixed*|alloc*) sinfo -N -o "%P %N %c %m %G %T" ;;
  *) echo "$0: node $H is '$state'; see /var/log/slurm/slurmd.log and slurmctld.log" >&2; exit 1 ;;
esac
