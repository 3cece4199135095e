# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for a seed, sync or cutover started in the background, showing its progress as it goes.

Ansible's own polling of an async task prints nothing but the job id; a seed of terabytes then
says nothing for hours, in a terminal or an AWX job. This action polls the job like
``async_status`` does, on the conversion host, and every ``progress_interval`` seconds reads the
migration's record (the heartbeat of the run refreshes it every 10 s) to print one line per VM:
bytes done of total, rate and ETA; a cutover's step and its downtime so far. A line is printed
only when it says something new, so a stalled job does not flood the output. Its result is the
job's result, as ``poll`` would have returned it.
"""

from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.xms.warm_migration.plugins.module_utils.argument_spec import openstack_argument_spec
from ansible_collections.xms.warm_migration.plugins.module_utils.report.progress import progress_line

display = Display()

ARGUMENT_SPEC = {
    **openstack_argument_spec(),
    "jid": {"type": "str", "required": True},
    "vm_name": {"type": "str"},
    "vm_uuid": {"type": "str"},
    "poll_interval": {"type": "int", "default": 15},
    "progress_interval": {"type": "int", "default": 60},
    "timeout": {"type": "int", "required": True},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC,
                                                        mutually_exclusive=[["vm_name", "vm_uuid"]])  # fmt: skip
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        status_args = {"jid": args["jid"], "_async_dir": async_dir}
        started = time.monotonic()
        next_report, last_line = started + args["progress_interval"], ""
        while True:
            status = self._execute_module("ansible.legacy.async_status", module_args=status_args, task_vars=task_vars)
            if status.get("finished") or status.get("failed"):
                break
            now = time.monotonic()
            if now - started > args["timeout"] + 60:  # the job's own limit is enforced on the host; this is its wrapper
                result.update(failed=True, msg=f"job {args['jid']} did not report finishing within its timeout "
                              f"({args['timeout']} s); see {async_dir} on the conversion host")  # fmt: skip
                return result
            if args["progress_interval"] > 0 and now >= next_report:
                next_report = now + args["progress_interval"]
                line = self._progress(args, task_vars)
                if line and line != last_line:
                    display.display(line)
                    last_line = line
            time.sleep(max(1, args["poll_interval"]))
        self._execute_module("ansible.legacy.async_status", module_args={**status_args, "mode": "cleanup"},
                             task_vars=task_vars)  # fmt: skip
        status.pop("invocation", None)
        result.update(status)
        return result

    def _progress(self, args, task_vars) -> str:
        """The migration's progress line, read from its record on the conversion host; best effort."""
        query = {k: args[k] for k in (*openstack_argument_spec(), "vm_name", "vm_uuid") if args.get(k) is not None}
        info = self._execute_module("xms.warm_migration.migration_info", module_args=query, task_vars=task_vars)
        migrations = info.get("migrations") or []
        if info.get("failed") or not migrations:
            return ""
        busy = [m for m in migrations if m.get("busy")] or migrations
        return progress_line(busy[0])
