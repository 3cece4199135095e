"""The labs' pid files: a pid counts as the lab's daemon only while that pid runs the daemon's command.

CI starts each run on a machine restored from an image, so the labs' pid files are there but their
processes are not, and the kernel hands those pids out again (pid_max is 32768). With `kill -0` alone,
the OpenStack lab once took a stranger for its cinder-volume, never started Cinder, and a whole CI run
failed on "connection refused" from the Cinder API; a stop would have killed the stranger.
"""

import os
import subprocess

from .conftest import LAB


def pid_runs(pidfile: str, text: str) -> bool:
    """lab/pidfile.sh's answer for ``pidfile`` and ``text``."""
    script = f'. "{os.path.join(LAB, "pidfile.sh")}" && pid_runs "$1" "$2"'
    return subprocess.run(["bash", "-c", script, "pid_runs", pidfile, text], check=False).returncode == 0


def test_a_pid_that_now_runs_something_else_is_not_the_daemon(tmp_path):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = tmp_path / "cinder-volume.pid"
        pidfile.write_text(f"{stranger.pid}\n")
        assert not pid_runs(str(pidfile), "/usr/bin/cinder-volume --config-file /etc/cinder/cinder.conf")
        assert pid_runs(str(pidfile), "sleep 60")
    finally:
        stranger.kill()
        stranger.wait()
    # The same pid once its process is gone, a pid file of garbage, and no pid file at all.
    assert not pid_runs(str(pidfile), "sleep 60")
    pidfile.write_text("not a pid\n")
    assert not pid_runs(str(pidfile), "sleep 60")
    assert not pid_runs(str(tmp_path / "absent.pid"), "sleep 60")
