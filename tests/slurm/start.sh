#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the tests: `start.sh DIR` installs Debian's
# slurmctld, slurmd, slurm-client and munge when missing (apt, as root), writes DIR/slurm.conf
# for this host (its CPUs, JobRequeue=1), starts munged (unless one answers), slurmctld and
# slurmd in the background, and waits until sinfo shows the node idle. It prints the conf
# path; the daemons it started are listed in DIR/pids for stop.sh. Exit 2: cannot run here.
set -euo pipefail
dir=$(realpath -m "${1:?usage: start.sh DIR}")
mkdir -p "$dir/state" "$dir/spool"
: > "$dir/pids"
need=()
for cmd in slurmctld slurmd sinfo munged; do
  command -v "$cmd" > /dev/null || need+=("$cmd")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then
    echo "SLURM is not installed (${need[*]}) and apt-get as root is not available" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q slurmctld slurmd slurm-client munge \
      || { apt-get update -q && apt-get install -y -q slurmctld slurmd slurm-client munge; }
  } > "$dir/apt.log" 2>&1 || { echo "apt-get install failed: $dir/apt.log" >&2; exit 2; }
fi
host=$(hostname -s)
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # (nproc obeys OMP_NUM_THREADS, which the tests set)
cat > "$dir/slurm.conf" <<CONF
ClusterName=cnnzoo-tests
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
# A requeued job waits cred_expire+1 s (default 120) before it starts again: the old run's
# credential must expire first, or slurmd refuses the relaunch ("Job credential revoked").
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ReturnToService=2
JobRequeue=1
MinJobAge=10
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF="$dir/slurm.conf"
# A cluster an earlier test run started and never stopped (killed before stop.sh) still answers
# on these ports with its own config (a new slurmctld cannot bind them): stop it, by its pid files.
left=$(scontrol show config 2> /dev/null | awk '$1 == "SLURM_CONF" {print $3}') || true
if [ -n "$left" ] && [ "$left" != "$SLURM_CONF" ]; then
  if [ -f "${left%/*}/pids" ]; then
    echo "stopping the test cluster an earlier run left: ${left%/*}" >&2
    bash "$(dirname "$0")/stop.sh" "${left%/*}"
  else
    echo "another slurmctld answers on port ${SLURMCTLD_PORT:-6817} ($left): set SLURMCTLD_PORT and SLURMD_PORT" >&2
    exit 2
  fi
fi
if ! munge -n 2> /dev/null | unmunge > /dev/null 2>&1; then
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2> /dev/null || true
  [ -s /etc/munge/munge.key ] || { mungekey --create 2> /dev/null || create-munge-key -f; }
  munged --force --pid-file="$dir/munged.pid" 2> "$dir/munged.err"
  echo "munged $dir/munged.pid" >> "$dir/pids"
fi
slurmctld && echo "slurmctld $dir/slurmctld.pid" >> "$dir/pids"
slurmd && echo "slurmd $dir/slurmd.pid" >> "$dir/pids"
for _ in $(seq 60); do
  if sinfo -h -o %T 2> /dev/null | grep -q '^idle'; then
    echo "$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
echo "the node did not become idle: $dir/slurmctld.log, $dir/slurmd.log" >&2
exit 2
