// Implementation of CLinuxLocking.h; see the header for why each piece exists.
#define _GNU_SOURCE
#include "CLinuxLocking.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

_Static_assert(blk_F_OFD_GETLK == F_OFD_GETLK, "kernel ABI");
_Static_assert(blk_F_OFD_SETLK == F_OFD_SETLK, "kernel ABI");
_Static_assert(blk_F_OFD_SETLKW == F_OFD_SETLKW, "kernel ABI");

int blk_fcntl_flock(int descriptor, int command, struct flock *lock) {
    return fcntl(descriptor, command, lock);
}

static void ignore_wake(int signal_number) { (void)signal_number; }

static pthread_once_t wake_handler_once = PTHREAD_ONCE_INIT;

static void install_wake_handler(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = ignore_wake;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; // no SA_RESTART: the point is to make the wait return EINTR
    sigaction(SIGRTMIN + 5, &action, NULL);
}

int blk_wake_signal(void) {
    pthread_once(&wake_handler_once, install_wake_handler);
    return SIGRTMIN + 5;
}

int blk_unblock_wake_signal(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, blk_wake_signal());
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

pid_t blk_thread_id(void) { return (pid_t)syscall(SYS_gettid); }

int blk_wake_timer_create(pid_t thread_id, long *timer) {
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = blk_wake_signal();
    event._sigev_un._tid = thread_id; // sigev_notify_thread_id, which glibc 2.36 does not define
    timer_t made;
    int result = timer_create(CLOCK_MONOTONIC, &event, &made);
    if (result == 0) *timer = (long)(intptr_t)made;
    return result;
}

int blk_wake_timer_arm(long timer_id, long long deadline_ns, long long interval_ns) {
    timer_t timer = (timer_t)(intptr_t)timer_id;
    struct itimerspec spec;
    memset(&spec, 0, sizeof spec);
    if (deadline_ns <= 0) {
        // it_value of zero would disarm; one nanosecond from now fires at once.
        spec.it_value.tv_nsec = 1;
        spec.it_interval.tv_sec = interval_ns / 1000000000LL;
        spec.it_interval.tv_nsec = interval_ns % 1000000000LL;
        return timer_settime(timer, 0, &spec, NULL);
    }
    spec.it_value.tv_sec = deadline_ns / 1000000000LL;
    spec.it_value.tv_nsec = deadline_ns % 1000000000LL;
    spec.it_interval.tv_sec = interval_ns / 1000000000LL;
    spec.it_interval.tv_nsec = interval_ns % 1000000000LL;
    return timer_settime(timer, TIMER_ABSTIME, &spec, NULL);
}

int blk_wake_timer_delete(long timer_id) { return timer_delete((timer_t)(intptr_t)timer_id); }

unsigned int blk_dev_major(unsigned long long device) { return major(device); }
unsigned int blk_dev_minor(unsigned long long device) { return minor(device); }

int blk_o_path_flag(void) { return O_PATH; }

int blk_pass_credentials(int socket) {
    int on = 1;
    return setsockopt(socket, SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
}

long blk_receive_with_sender(int socket, void *buffer, unsigned long length, long long *uid) {
    struct iovec part = { .iov_base = buffer, .iov_len = length };
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(struct ucred))];
    } control;
    struct msghdr message = { .msg_iov = &part, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control };
    ssize_t count = recvmsg(socket, &message, 0);
    *uid = -1;
    if (count < 0) return -1;
    for (struct cmsghdr *entry = CMSG_FIRSTHDR(&message); entry; entry = CMSG_NXTHDR(&message, entry)) {
        if (entry->cmsg_level == SOL_SOCKET && entry->cmsg_type == SCM_CREDENTIALS) {
            struct ucred credentials;
            memcpy(&credentials, CMSG_DATA(entry), sizeof credentials);
            *uid = credentials.uid;
        }
    }
    return count;
}
