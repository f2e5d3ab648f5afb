#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for trying and testing the SLURM launcher
# (bn_inception/launch.py) without a cluster:
#
#   sudo scripts/local_slurm.sh up       # install (Debian packages) if missing, start, wait
#   scripts/local_slurm.sh status        # daemons and their pids, `sinfo`
#   sudo scripts/local_slurm.sh down     # cancel this cluster's jobs, stop its daemons
#
# Daemons: munged, MariaDB (unix socket only), slurmdbd (accounting: submitit reads job states
# from `sacct`), slurmctld and slurmd, all as root, all on loopback. Every file they use lives
# under $BN_SLURM_DIR (default /var/lib/bn_inception_slurm); outside it only two paths are
# touched: /run/mysqld (slurmdbd reaches MariaDB through its default socket there) and
# /etc/slurm/slurm.conf, a symlink to our slurm.conf made only where no slurm.conf exists, so
# that sbatch/squeue/sacct find the cluster as on any other. `up` is idempotent; `down`
# stops only the daemons whose pid files are under $BN_SLURM_DIR and keeps the state
# (accounting database, logs) for the next `up`.
set -euo pipefail

D="${BN_SLURM_DIR:-/var/lib/bn_inception_slurm}"
CONF="$D/etc/slurm.conf"
SYSTEM_CONF=/etc/slurm/slurm.conf
MYSQL_SOCKET=/run/mysqld/mysqld.sock
CLUSTER=bn_inception
PARTITION=debug
CONF_CHANGED=0
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
export SLURM_CONF="$CONF"

say() { echo "local_slurm: $*"; }
die() { echo "local_slurm: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------- helpers

pid_of() {  # prints the pid in $D/run/$1.pid if that process is alive
  local f="$D/run/$1.pid" pid
  [[ -s "$f" ]] || return 1
  pid=$(tr -dc '0-9' < "$f")
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...: poll COMMAND every 0.5 s
  local limit=$1 what=$2; shift 2
  local t=0
  until "$@" >/dev/null 2>&1; do
    sleep 0.5; t=$((t + 1))
    if (( t > limit * 2 )); then return 1; fi
  done
}

started() { say "$1 running (pid $(pid_of "$1"))"; }

fail_with_log() {  # fail_with_log DAEMON LOGFILE
  echo "local_slurm: error: $1 did not start; last lines of $2:" >&2
  tail -n 15 "$2" >&2 2>/dev/null || true
  exit 1
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  (( ${#missing[@]} )) || return 0
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # policy-rc.d 101: the packages' own init scripts must not start system-wide daemons.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || {
    (( made_policy )) && rm -f "$policy"; die "apt-get install ${missing[*]} failed"; }
  (( made_policy )) && rm -f "$policy"
  return 0
}

write_configs() {
  mkdir -p "$D"/{etc,run,log,munge,spool/ctld,spool/d,mysql}
  chmod 700 "$D/munge"
  local node mem cpus sockets cores threads
  node=$(hostname -s)
  # The node as slurmd sees it: CPUs, sockets, cores, threads and memory (MB).
  local hw; hw=$(slurmd -C | head -n 1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  sockets=$(sed -n 's/.* SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$hw")
  cores=$(sed -n 's/.* CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$hw")
  threads=$(sed -n 's/.* ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  [[ -n "$cpus" && -n "$mem" ]] || die "could not read the node's CPUs/memory from 'slurmd -C': $hw"
  local auth="socket=$D/munge/munge.socket.2,cred_expire=5"
  local old=""; [[ -f "$CONF" ]] && old=$(cat "$CONF")
  cat > "$CONF" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster on loopback.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=5: a requeued job may start again 5 s after it ended (default 120 s).
AuthInfo=$auth
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$D/spool/d
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
# No cgroups here: track a job's processes by parentage, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
GresTypes=gpu
SchedulerType=sched/backfill
# Look at pending jobs every few seconds: a requeued job waits out its begin time (5 s),
# then starts at the next pass (the default pass comes every 60 s).
SchedulerParameters=sched_interval=2,bf_interval=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# With auth/munge this names the munged socket used to reach slurmdbd (default /run/munge/...).
AccountingStoragePass=$D/munge/munge.socket.2
JobCompType=jobcomp/none
# Seconds between SIGTERM and SIGKILL when a job ends, is cancelled or requeued.
KillWait=5
MailProg=/bin/true
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  [[ -z "$old" || "$old" == "$(cat "$CONF")" ]] || CONF_CHANGED=1
  cat > "$D/etc/slurmdbd.conf" <<EOF
# Written by scripts/local_slurm.sh: accounting in MariaDB over its unix socket.
AuthType=auth/munge
AuthInfo=$auth
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
EOF
  chmod 600 "$D/etc/slurmdbd.conf"
}

link_system_conf() {
  if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then return 0; fi
  if [[ -e "$SYSTEM_CONF" || -L "$SYSTEM_CONF" ]]; then
    say "$SYSTEM_CONF exists and is not ours: left alone; clients need SLURM_CONF=$CONF"
    return 0
  fi
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -s "$CONF" "$SYSTEM_CONF"
}

# ---------------------------------------------------------------------------- daemons

start_munge() {
  pid_of munged >/dev/null && { started munged; return 0; }
  [[ -s "$D/munge/munge.key" ]] || mungekey --create --keyfile="$D/munge/munge.key" 2>/dev/null ||
    { dd if=/dev/urandom of="$D/munge/munge.key" bs=1 count=1024 2>/dev/null; }
  chmod 400 "$D/munge/munge.key"
  munged --force --key-file="$D/munge/munge.key" --socket="$D/munge/munge.socket.2" \
    --pid-file="$D/run/munged.pid" --log-file="$D/log/munged.log" \
    --seed-file="$D/munge/munged.seed" || fail_with_log munged "$D/log/munged.log"
  wait_until 10 munged pid_of munged || fail_with_log munged "$D/log/munged.log"
  started munged
}

start_mariadb() {
  pid_of mysqld >/dev/null && { started mysqld; return 0; }
  if [[ -S "$MYSQL_SOCKET" ]] && mariadb --socket="$MYSQL_SOCKET" -e 'select 1' >/dev/null 2>&1; then
    die "another MariaDB/MySQL already answers on $MYSQL_SOCKET; stop it or run slurmdbd against it by hand"
  fi
  mkdir -p /run/mysqld
  if [[ ! -d "$D/mysql/mysql" ]]; then
    mariadb-install-db --user=root --datadir="$D/mysql" --auth-root-authentication-method=socket \
      --skip-test-db > "$D/log/mysql-install.log" 2>&1 || fail_with_log mariadb-install-db "$D/log/mysql-install.log"
  fi
  (setsid mariadbd --user=root --datadir="$D/mysql" --socket="$MYSQL_SOCKET" --skip-networking \
    --pid-file="$D/run/mysqld.pid" --log-error="$D/log/mysqld.log" \
    --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &)
  wait_until 60 mariadb timeout 5 mariadb --socket="$MYSQL_SOCKET" -e 'select 1' ||
    fail_with_log mariadbd "$D/log/mysqld.log"
  wait_until 10 mysqld pid_of mysqld || fail_with_log mariadbd "$D/log/mysqld.log"
  started mysqld
}

start_slurmdbd() {
  pid_of slurmdbd >/dev/null && { started slurmdbd; return 0; }
  slurmdbd || fail_with_log slurmdbd "$D/log/slurmdbd.log"
  wait_until 30 slurmdbd timeout 5 sacctmgr -n show cluster || fail_with_log slurmdbd "$D/log/slurmdbd.log"
  started slurmdbd
}

start_slurmctld() {
  pid_of slurmctld >/dev/null && { started slurmctld; return 0; }
  slurmctld -f "$CONF" || fail_with_log slurmctld "$D/log/slurmctld.log"
  wait_until 30 slurmctld timeout 5 scontrol ping || fail_with_log slurmctld "$D/log/slurmctld.log"
  started slurmctld
}

start_slurmd() {
  pid_of slurmd >/dev/null && { started slurmd; return 0; }
  slurmd -f "$CONF" || fail_with_log slurmd "$D/log/slurmd.log"
  wait_until 10 slurmd pid_of slurmd || fail_with_log slurmd "$D/log/slurmd.log"
  started slurmd
}

node_ready() {  # the node takes jobs and the cluster is registered for accounting
  local state
  state=$(timeout 5 sinfo -h -N -o '%T' 2>/dev/null | head -n 1)
  [[ "$state" == idle* || "$state" == mixed* || "$state" == allocated* ]] &&
    timeout 5 sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"
}

stop_daemon() {  # stop_daemon NAME: SIGTERM the pid in our pid file, wait, then SIGKILL
  local pid
  pid=$(pid_of "$1") || { rm -f "$D/run/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$D/run/$1.pid"
  say "stopped $1 (pid $pid)"
}

# ---------------------------------------------------------------------------- commands

up() {
  [[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts daemons)"
  local t0=$SECONDS
  install_packages
  write_configs
  link_system_conf
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurmctld
  start_slurmd
  if (( CONF_CHANGED )); then
    say "slurm.conf changed: scontrol reconfigure"; scontrol reconfigure
  fi
  if ! node_ready; then
    # A node left DOWN/DRAIN by an earlier run (ReturnToService handles most cases).
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
  fi
  wait_until 30 node node_ready || {
    sinfo -N -l >&2 || true; fail_with_log slurmctld "$D/log/slurmctld.log"; }
  say "up in $((SECONDS - t0)) s: partition '$PARTITION', node $(hostname -s)" \
      "($(sinfo -h -N -o '%c CPUs, %m MB' | head -n 1)); state under $D"
}

down() {
  if pid_of slurmctld >/dev/null; then
    local jobs; jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n "$jobs" ]]; then
      say "cancelling jobs $(echo $jobs)"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      wait_until 30 jobs bash -c '[[ -z "$(squeue -h -o %i)" ]]' || true
    fi
  fi
  local name
  for name in slurmd slurmctld slurmdbd mysqld munged; do stop_daemon "$name"; done
  if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
    rm -f "$SYSTEM_CONF"
  fi
}

status() {
  local name pid rc=0
  for name in munged mysqld slurmdbd slurmctld slurmd; do
    if pid=$(pid_of "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; rc=1; fi
  done
  if (( rc == 0 )); then sinfo -N -o '%N %P %T %c %m' || rc=1; fi
  return "$rc"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status   (state under \$BN_SLURM_DIR, default $D)" >&2; exit 2 ;;
esac
