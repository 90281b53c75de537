"""Runs a command with io_uring refused as Docker's default seccomp profile refuses it (issue #24).

Docker's default profile (moby 25 on) leaves ``io_uring_setup``, ``io_uring_enter`` and ``io_uring_register``
out of its allow list, so they fail with EPERM, its ``defaultErrnoRet``. This installs a seccomp filter that
does exactly that and nothing else, then runs the command in its place (a filter survives ``execve``)::

    python tests/seccomp_io_uring.py -- python -m lkswarm run ...

Unprivileged: ``PR_SET_NO_NEW_PRIVS`` first, as the kernel requires of a process without CAP_SYS_ADMIN.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

# The io_uring system calls: the same numbers on every architecture since Linux 5.1 (asm-generic's table).
IO_URING_SYSCALLS = (425, 426, 427)  # io_uring_setup, io_uring_enter, io_uring_register
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_KILL_PROCESS = 0x80000000
# Classic BPF opcodes (linux/filter.h).
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JGT_K = 0x25
BPF_RET_K = 0x06
# struct seccomp_data: int nr; __u32 arch; ...
OFFSET_NR, OFFSET_ARCH = 0, 4


def _instruction(code: int, jump_true: int, jump_false: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, k)


def io_uring_refusing_filter(arch: int) -> bytes:
    """The BPF program: EPERM for the three io_uring calls, every other call allowed; a call made under
    another ABI than ``arch`` (x32, i386 on x86_64) is killed, as seccomp filters must not guess its numbers."""
    first, last = min(IO_URING_SYSCALLS), max(IO_URING_SYSCALLS)
    return b"".join(
        [
            _instruction(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
            _instruction(BPF_JEQ_K, 1, 0, arch),
            _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
            _instruction(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
            _instruction(BPF_JGE_K, 0, 2, first),  # below the range: allow
            _instruction(BPF_JGT_K, 1, 0, last),  # above the range: allow
            _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM),
            _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ]
    )


def refuse_io_uring() -> None:
    """Installs the filter on this process (and everything it runs from now on)."""
    arch = AUDIT_ARCH.get(platform.machine())
    if arch is None:
        raise OSError(errno.ENOTSUP, f"no seccomp architecture constant for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    program = io_uring_refusing_filter(arch)
    filters = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program) // 8, ctypes.cast(filters, ctypes.c_void_p))

    def prctl(option: int, *args: object) -> None:
        unused = [ctypes.c_ulong(0)] * (4 - len(args))  # prctl takes four arguments after the option
        if libc.prctl(option, *args, *unused) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl({option}): {os.strerror(error)}")

    prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1))
    prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog))


def main(argv: list[str]) -> None:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        sys.exit("usage: seccomp_io_uring.py -- COMMAND [ARG...]")
    command = argv[argv.index("--") + 1 :]
    refuse_io_uring()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
