// SanlockLockspace: the lockspace of a lease area — laying the area out, joining and leaving it
// on this host, and who is in it. (`blk lease init|join|leave|status`.)
import CSanlock
import Glibc
import Posix
import SystemPackage

/// The host-level half of leases, apart from the engine: laid out once, joined once per boot,
/// while images take and give back leases all day.
public struct SanlockLockspace: Sendable {
    /// Where the lockspace lives and its name.
    public let settings: LeaseSettings

    /// Touches nothing: each operation goes to this host's sanlock daemon when called.
    public init(settings: LeaseSettings) {
        self.settings = settings
    }

    /// A host as this host's daemon sees it in the lockspace.
    public struct Host: Sendable, Hashable {
        /// The host's id in the lockspace (1–2000).
        public var id: UInt64
        /// The name the host recorded when it joined, for messages.
        public var name: String?
        /// Bumped on each join: a lease of an older generation is stale.
        public var generation: UInt64
        /// "live", "dead", "fail", "free" or "unknown" (sanlock's host states).
        public var state: String
        /// When the host last renewed its delta lease, in sanlock's clock: a stalled one is
        /// failing.
        public var timestamp: UInt64
        /// The host's lease I/O timeout, which sets how soon its leases expire once it stops
        /// renewing.
        public var ioTimeout: UInt32
    }

    /// Lays out the lockspace: in a lease folder, the lockspace file (made when missing); on a
    /// lease device, the lockspace at offset 0 and an empty resource index after it. Through this
    /// host's daemon. A lockspace already there is refused unless `force`: writing it again fails
    /// every host that joined it, and on a device forgets where every lease is.
    public func initialize(ioTimeout: UInt32?, force: Bool) throws(LockingError) {
        try SanlockLibrary.load()
        var status = stat()
        guard stat(settings.location, &status) == 0 else {
            throw LockingError(.notFound, "Could not use '\(settings.location)' for leases: \(Errno.current); make the folder on the shared storage first (or give a block device)", path: settings.location)
        }
        if settings.layout == .directory { try makeLockspaceFileIfMissing() }
        var lockspace = descriptor(hostID: 0)
        var existingTimeout: UInt32 = 0
        if !force && blk_sanlock_read_lockspace(&lockspace, 0, &existingTimeout) >= 0 {
            throw LockingError(.conflict, "lockspace '\(settings.lockspace)' already exists in \(settings.lockspacePath) (io timeout \(existingTimeout) s): hosts join it with blk lease join; init --force rewrites it, failing every host in it")
        }
        var result = blk_sanlock_write_lockspace(&lockspace, 0, 0, ioTimeout ?? 0)
        guard result >= 0 else { throw failure(result, "write lockspace '\(settings.lockspace)' to '\(settings.lockspacePath)'") }
        guard settings.layout == .area else { return }
        var index = blk_sanlk_rindex()
        SanlockLibrary.copy(settings.lockspace, into: &index.lockspace_name)
        SanlockLibrary.copy(settings.location, into: &index.disk.path)
        index.disk.offset = SanlockEngine.indexOffset
        result = blk_sanlock_format_rindex(&index, 0)
        guard result >= 0 else { throw failure(result, "format the resource index of '\(settings.location)'") }
    }

    /// Joins the lockspace as `hostID`; returns once this host holds its delta lease, which takes
    /// sanlock about 2 × ioTimeout + 1 s (21 s at the default 10 s).
    /// The host's name (`hostName`, else the host name) is recorded in a lease folder for the
    /// other hosts' messages.
    public func join(hostID: UInt64, ioTimeout: UInt32?) throws(LockingError) {
        try SanlockLibrary.load()
        var lockspace = descriptor(hostID: hostID)
        let result = blk_sanlock_add_lockspace_timeout(&lockspace, 0, ioTimeout ?? 0)
        if result >= 0 || result == -EEXIST {
            try LeaseHostNames.record(settings.hostName ?? Self.systemHostName, hostID: hostID, settings: settings)
            return
        }
        let hint = result == Int32(BLK_SANLK_HOSTID_BUSY)
            ? ": host id \(hostID) is in use by another live host; each host needs its own" : ""
        throw failure(result, "join lockspace '\(settings.lockspace)' as host \(hostID)", hint: hint)
    }

    /// Leaves the lockspace. Refused while a process on this host holds a lease in it, unless
    /// `force`: then sanlock ends those processes first (SIGKILL, as sanlock 3.8 does on removal).
    public func leave(hostID: UInt64, force: Bool) throws(LockingError) {
        try SanlockLibrary.load()
        var lockspace = descriptor(hostID: hostID)
        let result = blk_sanlock_rem_lockspace(&lockspace, force ? 0 : UInt32(BLK_SANLK_REM_UNUSED))
        if result == -ENOENT && !SanlockLibrary.isDaemonMissing(result) { return }
        if result == -EBUSY {
            throw LockingError(.conflict, "Could not leave lockspace '\(settings.lockspace)': processes on this host hold leases in it (sanlock client status lists them); close their images first, or leave with --force, which kills them")
        }
        guard result >= 0 else { throw failure(result, "leave lockspace '\(settings.lockspace)'") }
    }

    /// Whether this host's daemon has joined the lockspace (with any host id).
    public func isJoined(hostID: UInt64) throws(LockingError) -> Bool {
        try SanlockLibrary.load()
        var lockspace = descriptor(hostID: hostID)
        let result = blk_sanlock_inq_lockspace(&lockspace, 0)
        if result == 0 { return true }
        if result == -ENOENT { return false }
        throw failure(result, "ask about lockspace '\(settings.lockspace)'")
    }

    /// The hosts of the lockspace as this host's daemon last saw them (it must have joined);
    /// none yet in the first seconds after joining.
    public func hosts() throws(LockingError) -> [Host] {
        try SanlockLibrary.load()
        var hosts: UnsafeMutablePointer<blk_sanlk_host>?
        var count: Int32 = 0
        let result = blk_sanlock_get_hosts(settings.lockspace, 0, &hosts, &count, 0)
        defer { blk_sanlock_free(hosts) }
        // Just after joining, the daemon has not read the other hosts' delta leases yet.
        if result == -EAGAIN { return [] }
        guard result >= 0 else { throw failure(result, "list the hosts of lockspace '\(settings.lockspace)'") }
        let names = LeaseHostNames(settings: settings)
        return (0..<Int(count)).map { index in
            let host = hosts![index]
            return Host(id: host.host_id, name: names.name(of: host.host_id), generation: host.generation,
                        state: Self.stateName(host.flags & UInt32(BLK_SANLK_HOST_MASK)),
                        timestamp: host.timestamp, ioTimeout: host.io_timeout)
        }
    }

    static func stateName(_ state: UInt32) -> String {
        switch Int(state) {
        case BLK_SANLK_HOST_FREE: "free"
        case BLK_SANLK_HOST_LIVE: "live"
        case BLK_SANLK_HOST_FAIL: "fail"
        case BLK_SANLK_HOST_DEAD: "dead"
        default: "unknown"
        }
    }

    private func descriptor(hostID: UInt64) -> blk_sanlk_lockspace {
        var lockspace = blk_sanlk_lockspace()
        SanlockLibrary.copy(settings.lockspace, into: &lockspace.name)
        lockspace.host_id = hostID
        SanlockLibrary.copy(settings.lockspacePath, into: &lockspace.host_id_disk.path)
        return lockspace
    }

    static var systemHostName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count - 1)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The lockspace file of a lease folder: 1 MiB, room for 2000 hosts' delta leases.
    private func makeLockspaceFileIfMissing() throws(LockingError) {
        let path = settings.lockspacePath
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if descriptor < 0 {
            if Errno.current == .fileExists { return }
            throw LockingError(.notFound, "Could not create the lockspace file '\(path)': \(Errno.current)", path: path)
        }
        defer { close(descriptor) }
        if ftruncate(descriptor, off_t(SanlockEngine.leaseBytes)) != 0 {
            throw LockingError(.ioError, "Could not size the lockspace file '\(path)': \(Errno.current)", path: path)
        }
    }

    private func failure(_ result: Int32, _ what: String, hint: String = "") -> LockingError {
        if SanlockLibrary.isDaemonMissing(result) { return SanlockLibrary.daemonUnreachable(result, doing: what) }
        return LockingError(.leaseUnavailable, "Could not \(what): \(SanlockLibrary.words(result))\(hint)", path: settings.location)
    }
}
