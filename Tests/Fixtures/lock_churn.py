#!/usr/bin/python3
"""Lock churn, as a busy host has it: holds HELD classic POSIX locks on FILE (non-adjacent bytes,
so each is a line of /proc/locks), says "ready", then takes and drops CHURN more in a loop until
stdin closes. The kernel prints /proc/locks a page per read(2), each page from the lock list as
it is then, so this churn moves other files' lines between one page and the next.
Usage: lock_churn.py FILE HELD CHURN"""
import fcntl
import os
import select
import sys

path, held, churn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
for index in range(held):
    fcntl.lockf(descriptor, fcntl.LOCK_SH, 1, 2 * index)
print("ready", flush=True)
first = 2 * held
while not select.select([sys.stdin], [], [], 0)[0]:
    for index in range(churn):
        fcntl.lockf(descriptor, fcntl.LOCK_SH, 1, first + 2 * index)
    for index in range(churn):
        fcntl.lockf(descriptor, fcntl.LOCK_UN, 1, first + 2 * index)
