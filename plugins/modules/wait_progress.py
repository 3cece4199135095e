#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the wait_progress action (the action plugin does the work, on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: wait_progress
short_description: Wait for a background seed, sync or cutover, showing its progress
version_added: 0.1.0
description:
  - Polls a job started with C(async) and C(poll) set to V(0) on the conversion host, as
    M(ansible.builtin.async_status) does, and every O(progress_interval) seconds prints one line
    with the migration's progress read from its record - bytes done of total, rate and ETA, or a
    cutover's last step and its downtime so far. A line is printed only when it changed.
  - Returns the job's result, as the task would have with C(poll) set.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.block_sync
  - module: xms.warm_migration.cutover
  - module: xms.warm_migration.migration_info
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.openstack
options:
  jid:
    description: The job id of the background task (its registered C(ansible_job_id)).
    type: str
    required: true
  vm_name:
    description: The VM whose migration's progress to show (or O(vm_uuid)).
    type: str
  vm_uuid:
    description: The instance UUID of the VM whose migration's progress to show.
    type: str
  poll_interval:
    description: Seconds between checks of the job.
    type: int
    default: 15
  progress_interval:
    description: Seconds between progress lines; V(0) shows none.
    type: int
    default: 60
  timeout:
    description: The job's C(async) limit in seconds; the wait gives up a minute after it.
    type: int
    required: true
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the
      controller.
    support: full
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Waits for the job as it ran; it changes nothing itself.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
"""

EXAMPLES = r"""
- name: Start the seed in the background
  xms.warm_migration.block_sync:
    vm_name: web01
  async: 86400
  poll: 0
  register: seed_job

- name: Wait for the seed, a progress line a minute
  xms.warm_migration.wait_progress:
    jid: "{{ seed_job.ansible_job_id }}"
    vm_name: web01
    timeout: 86400
  register: seed_result
"""

RETURN = r"""
finished:
  description: Whether the job finished (always true unless the wait timed out).
  returned: always
  type: bool
msg:
  description: The job's message, when it failed.
  returned: failure
  type: str
"""
