// The part of sanlock's client ABI (libsanlock_client.so.1, sanlock 3.x) that BlockLayer uses,
// declared here so the package builds without sanlock's headers; the library is loaded with
// dlopen on first use. Layouts and constants are sanlock's, from sanlock.h, sanlock_admin.h,
// sanlock_resource.h and sanlock_rv.h.
#ifndef BLK_CSANLOCK_H
#define BLK_CSANLOCK_H

#include <stdint.h>

#define BLK_SANLK_NAME_LEN 48
#define BLK_SANLK_PATH_LEN 1024

struct blk_sanlk_disk {
    char path[BLK_SANLK_PATH_LEN];
    uint64_t offset;
    uint32_t pad1;
    uint32_t pad2;
};

/// sanlk_resource with room for exactly one disk, which is all an image lease needs.
struct blk_sanlk_resource {
    char lockspace_name[BLK_SANLK_NAME_LEN];
    char name[BLK_SANLK_NAME_LEN];
    uint64_t lver;
    uint64_t data64;
    uint32_t data32;
    uint32_t unused;
    uint32_t flags;
    uint32_t num_disks;
    struct blk_sanlk_disk disks[1];
};

struct blk_sanlk_lockspace {
    char name[BLK_SANLK_NAME_LEN];
    uint64_t host_id;
    uint32_t flags;
    struct blk_sanlk_disk host_id_disk;
};

struct blk_sanlk_host {
    uint64_t host_id;
    uint64_t generation;
    uint64_t timestamp;
    uint32_t io_timeout;
    uint32_t flags;
};

struct blk_sanlk_rindex {
    uint32_t flags;
    uint32_t max_resources;
    uint64_t unused;
    char lockspace_name[BLK_SANLK_NAME_LEN];
    struct blk_sanlk_disk disk;
};

struct blk_sanlk_rentry {
    char name[BLK_SANLK_NAME_LEN];
    uint64_t offset;
    uint32_t flags;
    uint32_t unused;
};

struct blk_sanlk_options {
    char owner_name[BLK_SANLK_NAME_LEN];
    uint32_t flags;
    uint32_t len;
};

enum {
    BLK_SANLK_ACQUIRE_OWNER_NOWAIT = 0x8,
    BLK_SANLK_RES_LVER = 0x1,
    BLK_SANLK_RES_SHARED = 0x4,
    BLK_SANLK_REQ_FORCE = 1, BLK_SANLK_REQ_GRACEFUL = 2,
    BLK_SANLK_REM_UNUSED = 0x2,
    BLK_SANLK_HOST_MASK = 0xF,
    BLK_SANLK_HOST_FREE = 2, BLK_SANLK_HOST_LIVE = 3,
    BLK_SANLK_HOST_FAIL = 4, BLK_SANLK_HOST_DEAD = 5,
    BLK_SANLK_ACQUIRE_LOCKSPACE = -241, BLK_SANLK_ACQUIRE_IDLIVE = -243,
    BLK_SANLK_ACQUIRE_OWNED = -244, BLK_SANLK_ACQUIRE_OTHER = -245, BLK_SANLK_ACQUIRE_SHRETRY = -246,
    BLK_SANLK_ACQUIRE_OWNED_RETRY = -247, BLK_SANLK_HOSTID_BUSY = -262,
    BLK_SANLK_RINDEX_MAGIC = -274, BLK_SANLK_LEADER_MAGIC = -223,
};

/// Loads libsanlock_client.so.1 once; 0 when every symbol below was found, else -1, and
/// blk_sanlock_load_error says why (dlerror's words).
int blk_sanlock_load(void);
const char *blk_sanlock_load_error(void);

const char *blk_sanlock_strerror(int rv);
int blk_sanlock_register(void);
int blk_sanlock_killpath(int sock, uint32_t flags, const char *path, char *args);
int blk_sanlock_acquire(int sock, int pid, uint32_t flags, struct blk_sanlk_resource *res, struct blk_sanlk_options *opt);
int blk_sanlock_release(int sock, int pid, uint32_t flags, struct blk_sanlk_resource *res);
int blk_sanlock_convert(int sock, int pid, uint32_t flags, struct blk_sanlk_resource *res);
int blk_sanlock_write_lockspace(struct blk_sanlk_lockspace *ls, int max_hosts, uint32_t flags, uint32_t io_timeout);
int blk_sanlock_read_lockspace(struct blk_sanlk_lockspace *ls, uint32_t flags, uint32_t *io_timeout);
int blk_sanlock_add_lockspace_timeout(struct blk_sanlk_lockspace *ls, uint32_t flags, uint32_t io_timeout);
int blk_sanlock_inq_lockspace(struct blk_sanlk_lockspace *ls, uint32_t flags);
int blk_sanlock_rem_lockspace(struct blk_sanlk_lockspace *ls, uint32_t flags);
/// On success *hosts is malloc'd (free it with free) and holds *count entries.
int blk_sanlock_get_hosts(const char *lockspace, uint64_t host_id, struct blk_sanlk_host **hosts, int *count, uint32_t flags);
int blk_sanlock_read_resource_owners(struct blk_sanlk_resource *res, uint32_t flags, struct blk_sanlk_host **hosts, int *count);
int blk_sanlock_write_resource(struct blk_sanlk_resource *res, int max_hosts, int num_hosts, uint32_t flags);
int blk_sanlock_read_resource(struct blk_sanlk_resource *res, uint32_t flags);
int blk_sanlock_request(uint32_t flags, uint32_t force_mode, struct blk_sanlk_resource *res);
int blk_sanlock_format_rindex(struct blk_sanlk_rindex *rx, uint32_t flags);
int blk_sanlock_create_resource(struct blk_sanlk_rindex *rx, uint32_t flags, struct blk_sanlk_rentry *re, int max_hosts, int num_hosts);
int blk_sanlock_lookup_rindex(struct blk_sanlk_rindex *rx, uint32_t flags, struct blk_sanlk_rentry *re);
void blk_sanlock_free(void *pointer);

#endif
