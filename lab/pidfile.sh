# shellcheck shell=bash
# Sourced by the labs' up.sh and down.sh scripts.
#
# pid_runs PIDFILE TEXT: the pid in PIDFILE is a live process whose command line holds TEXT.
# A pid file outlives its process when a machine starts again from an image (as CI's do), and
# the kernel gives that pid (pid_max is 32768 here) to whatever starts next: `kill -0` alone
# then calls a stranger the lab's daemon, the daemon is never started, and a stop kills the stranger.
pid_runs() {
  local pid cmdline
  pid=$(cat "$1" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"$2"* ]]
}
