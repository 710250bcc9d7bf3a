// CLinuxLocking: the few pieces of Linux's locking and signal ABI that Swift's Glibc module
// does not export. Glibc hides F_OFD_* and SIGEV_THREAD_ID behind _GNU_SOURCE, and the Glibc
// module Swift imports is built without it, so defining _GNU_SOURCE here would come too late.
// The values below are kernel ABI (include/uapi/asm-generic/fcntl.h, siginfo.h) and never change.
//
// Map: lock commands · fcntl wrapper · the wake signal and per-thread wake timers (used to
// interrupt a thread blocked in F_OFD_SETLKW at a deadline or on cancellation).
#ifndef CLINUXLOCKING_H
#define CLINUXLOCKING_H

#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <sys/types.h>

enum {
    blk_F_OFD_GETLK = 36,
    blk_F_OFD_SETLK = 37,
    blk_F_OFD_SETLKW = 38,
};

/// fcntl(2) with a struct flock argument; Swift cannot call the variadic C function directly.
int blk_fcntl_flock(int descriptor, int command, struct flock *lock);

/// The real-time signal used to interrupt lock waits (SIGRTMIN+5). The first call installs a
/// handler that does nothing and, without SA_RESTART, makes a blocked F_OFD_SETLKW return EINTR.
int blk_wake_signal(void);

/// Unblocks the wake signal in the calling thread (threads may inherit a mask that blocks it).
int blk_unblock_wake_signal(void);

/// The calling thread's kernel thread id (gettid(2)).
pid_t blk_thread_id(void);

/// Creates a CLOCK_MONOTONIC timer whose expiry sends the wake signal to thread `thread_id`.
/// The timer is handed out as an integer: glibc's timer_t for such timers is the kernel's timer
/// id cast to a pointer, and id 0 (a null pointer) is valid.
int blk_wake_timer_create(pid_t thread_id, long *timer);

/// Arms `timer` to fire at the absolute CLOCK_MONOTONIC time `deadline_ns` (0: at once), then
/// every `interval_ns`, so a signal that lands just before the thread enters the syscall is
/// followed by another one.
int blk_wake_timer_arm(long timer, long long deadline_ns, long long interval_ns);

/// Deletes a timer made by blk_wake_timer_create.
int blk_wake_timer_delete(long timer);

/// O_PATH (a descriptor that names a file without opening it), behind _GNU_SOURCE.
int blk_o_path_flag(void);

/// Makes `socket` (AF_UNIX) attach its senders' credentials to what it receives (SO_PASSCRED).
int blk_pass_credentials(int socket);

/// recv(2) on a socket with SO_PASSCRED: up to `length` bytes into `buffer`, and the sender's uid
/// in `uid` (-1 when the kernel attached none). Returns the byte count, or -1 with errno.
long blk_receive_with_sender(int socket, void *buffer, unsigned long length, long long *uid);

/// Major and minor numbers of a dev_t, as /proc/locks prints them.
unsigned int blk_dev_major(unsigned long long device);
unsigned int blk_dev_minor(unsigned long long device);

#endif
