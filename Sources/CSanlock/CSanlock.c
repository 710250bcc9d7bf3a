// Calls into libsanlock_client.so.1 through dlopen, so that BlockLayer builds and runs where
// sanlock is not installed and only a lease request needs it.
#include "CSanlock.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static struct {
    const char *(*strerror)(int);
    int (*register_)(void);
    int (*killpath)(int, uint32_t, const char *, char *);
    int (*acquire)(int, int, uint32_t, int, struct blk_sanlk_resource **, struct blk_sanlk_options *);
    int (*release)(int, int, uint32_t, int, struct blk_sanlk_resource **);
    int (*convert)(int, int, uint32_t, struct blk_sanlk_resource *);
    int (*write_lockspace)(struct blk_sanlk_lockspace *, int, uint32_t, uint32_t);
    int (*read_lockspace)(struct blk_sanlk_lockspace *, uint32_t, uint32_t *);
    int (*add_lockspace_timeout)(struct blk_sanlk_lockspace *, uint32_t, uint32_t);
    int (*inq_lockspace)(struct blk_sanlk_lockspace *, uint32_t);
    int (*rem_lockspace)(struct blk_sanlk_lockspace *, uint32_t);
    int (*get_hosts)(const char *, uint64_t, struct blk_sanlk_host **, int *, uint32_t);
    int (*read_resource_owners)(struct blk_sanlk_resource *, uint32_t, struct blk_sanlk_host **, int *);
    int (*write_resource)(struct blk_sanlk_resource *, int, int, uint32_t);
    int (*read_resource)(struct blk_sanlk_resource *, uint32_t);
    int (*request)(uint32_t, uint32_t, struct blk_sanlk_resource *);
    int (*format_rindex)(struct blk_sanlk_rindex *, uint32_t);
    int (*create_resource)(struct blk_sanlk_rindex *, uint32_t, struct blk_sanlk_rentry *, int, int);
    int (*lookup_rindex)(struct blk_sanlk_rindex *, uint32_t, struct blk_sanlk_rentry *);
} api;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_result = -1;
static char load_error[512];

#define BIND(field, symbol) \
    if (!(*(void **)&api.field = dlsym(library, symbol))) { \
        snprintf(load_error, sizeof load_error, "libsanlock_client.so.1 has no %s (sanlock too old?)", symbol); \
        return; \
    }

static void load(void) {
    void *library = dlopen("libsanlock_client.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        snprintf(load_error, sizeof load_error, "%s", dlerror());
        return;
    }
    BIND(strerror, "sanlock_strerror")
    BIND(register_, "sanlock_register")
    BIND(killpath, "sanlock_killpath")
    BIND(acquire, "sanlock_acquire")
    BIND(release, "sanlock_release")
    BIND(convert, "sanlock_convert")
    BIND(write_lockspace, "sanlock_write_lockspace")
    BIND(read_lockspace, "sanlock_read_lockspace")
    BIND(add_lockspace_timeout, "sanlock_add_lockspace_timeout")
    BIND(inq_lockspace, "sanlock_inq_lockspace")
    BIND(rem_lockspace, "sanlock_rem_lockspace")
    BIND(get_hosts, "sanlock_get_hosts")
    BIND(read_resource_owners, "sanlock_read_resource_owners")
    BIND(write_resource, "sanlock_write_resource")
    BIND(read_resource, "sanlock_read_resource")
    BIND(request, "sanlock_request")
    BIND(format_rindex, "sanlock_format_rindex")
    BIND(create_resource, "sanlock_create_resource")
    BIND(lookup_rindex, "sanlock_lookup_rindex")
    load_result = 0;
}

int blk_sanlock_load(void) {
    pthread_once(&load_once, load);
    return load_result;
}

const char *blk_sanlock_load_error(void) { return load_error; }

// Every call below is made only after blk_sanlock_load returned 0 (the Swift side checks).
const char *blk_sanlock_strerror(int rv) { return api.strerror(rv); }
int blk_sanlock_register(void) { return api.register_(); }
int blk_sanlock_killpath(int sock, uint32_t flags, const char *path, char *args) { return api.killpath(sock, flags, path, args); }
int blk_sanlock_acquire(int sock, int pid, uint32_t flags, struct blk_sanlk_resource *res, struct blk_sanlk_options *opt) {
    return api.acquire(sock, pid, flags, 1, &res, opt);
}
int blk_sanlock_release(int sock, int pid, uint32_t flags, struct blk_sanlk_resource *res) {
    return api.release(sock, pid, flags, 1, &res);
}
int blk_sanlock_convert(int sock, int pid, uint32_t flags, struct blk_sanlk_resource *res) { return api.convert(sock, pid, flags, res); }
int blk_sanlock_write_lockspace(struct blk_sanlk_lockspace *ls, int max_hosts, uint32_t flags, uint32_t io_timeout) {
    return api.write_lockspace(ls, max_hosts, flags, io_timeout);
}
int blk_sanlock_read_lockspace(struct blk_sanlk_lockspace *ls, uint32_t flags, uint32_t *io_timeout) { return api.read_lockspace(ls, flags, io_timeout); }
int blk_sanlock_add_lockspace_timeout(struct blk_sanlk_lockspace *ls, uint32_t flags, uint32_t io_timeout) {
    return api.add_lockspace_timeout(ls, flags, io_timeout);
}
int blk_sanlock_inq_lockspace(struct blk_sanlk_lockspace *ls, uint32_t flags) { return api.inq_lockspace(ls, flags); }
int blk_sanlock_rem_lockspace(struct blk_sanlk_lockspace *ls, uint32_t flags) { return api.rem_lockspace(ls, flags); }
int blk_sanlock_get_hosts(const char *lockspace, uint64_t host_id, struct blk_sanlk_host **hosts, int *count, uint32_t flags) {
    return api.get_hosts(lockspace, host_id, hosts, count, flags);
}
int blk_sanlock_read_resource_owners(struct blk_sanlk_resource *res, uint32_t flags, struct blk_sanlk_host **hosts, int *count) {
    return api.read_resource_owners(res, flags, hosts, count);
}
int blk_sanlock_write_resource(struct blk_sanlk_resource *res, int max_hosts, int num_hosts, uint32_t flags) {
    return api.write_resource(res, max_hosts, num_hosts, flags);
}
int blk_sanlock_read_resource(struct blk_sanlk_resource *res, uint32_t flags) { return api.read_resource(res, flags); }
int blk_sanlock_request(uint32_t flags, uint32_t force_mode, struct blk_sanlk_resource *res) { return api.request(flags, force_mode, res); }
int blk_sanlock_format_rindex(struct blk_sanlk_rindex *rx, uint32_t flags) { return api.format_rindex(rx, flags); }
int blk_sanlock_create_resource(struct blk_sanlk_rindex *rx, uint32_t flags, struct blk_sanlk_rentry *re, int max_hosts, int num_hosts) {
    return api.create_resource(rx, flags, re, max_hosts, num_hosts);
}
int blk_sanlock_lookup_rindex(struct blk_sanlk_rindex *rx, uint32_t flags, struct blk_sanlk_rentry *re) { return api.lookup_rindex(rx, flags, re); }
void blk_sanlock_free(void *pointer) { free(pointer); }
