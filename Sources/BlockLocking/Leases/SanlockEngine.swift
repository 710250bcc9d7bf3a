// SanlockEngine: image leases as sanlock resources — disk-paxos leases on the shared storage,
// granted by the sanlock daemon of each host, as libvirt's auto disk leases are.
//
// Where an image's lease lives (LeaseSettings.layout): in a lease folder, its own 1 MiB file
// named after the image, made on first use by whichever host opens the image first (written
// under a temporary name and linked into place, so two hosts racing make one); on a lease
// device, a slot found through sanlock's resource index (rindex), which sanlock allocates under
// a lease of its own.
import CSanlock
import Crypto
import Glibc
import Posix
import Synchronization
import SystemPackage

/// The lease engine libvirt and oVirt use, reached through sanlock's client library loaded at
/// run time, so programs build and run where sanlock is absent.
public final class SanlockEngine: LeaseEngine {
    /// Where this engine's leases live and which lockspace grants them.
    public let settings: LeaseSettings
    /// The registration the lease was acquired through: a new one after a fence is a new client.
    private let registration = Mutex<SanlockRegistration?>(nil)

    /// On a lease device, the resource index sits right after a lockspace of sanlock's default
    /// 1 MiB align size; resource leases are 1 MiB each.
    static let indexOffset: UInt64 = 1 << 20
    static let leaseBytes: Int = 1 << 20

    /// Connects to nothing yet: the daemon is first asked when a lease is.
    public init(settings: LeaseSettings) {
        self.settings = settings
    }

    /// Names the lockspace and location, so a refusal says which storage was asked.
    public var description: String { "sanlock lockspace '\(settings.lockspace)' in '\(settings.location)'" }

    /// The lease name for the image at `path`: "blk." and 40 hex digits of the SHA-256 of its
    /// canonical path — every host must reach the image by the same path, as libvirt requires.
    public static func leasedImage(path: String) throws(LockingError) -> LeasedImage {
        guard let resolved = realpath(path, nil) else {
            throw LockingError(.notFound, "Could not resolve '\(path)' for its lease: \(Errno.current)", path: path)
        }
        defer { free(resolved) }
        let canonical = String(cString: resolved)
        let digest = SHA256.hash(data: Array(canonical.utf8))
        let hex = digest.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        return LeasedImage(path: canonical, resourceName: "blk." + hex.prefix(40))
    }

    /// Set by the registration's watcher when sanlock fences this process or its daemon dies.
    public var loss: LockingError? { registration.withLock { $0?.loss } }

    /// Counted by the registration, whose fence waits for the count to fall to zero.
    public func beginWrite() throws(LockingError) {
        try registration.withLock { $0 }?.beginWrite()
    }

    /// Lets a waiting fence go on once the last admitted write has ended.
    public func endWrite() {
        registration.withLock { $0 }?.endWrite()
    }

    /// Tells process `pid` that sanlock revoked its leases: it stops writing and gives them back.
    public static func fence(pid: Int32, reason: String) throws(LockingError) {
        try SanlockRegistration.sendFence(to: pid, reason: reason)
    }

    /// A new lease goes through the process's current registration with the daemon, or a new one
    /// if that was fenced (a fenced registration never grants again); a mode change converts the
    /// lease held, through the registration it was taken by.
    public func acquire(_ image: LeasedImage, _ mode: LeaseMode, holding held: LeaseMode?) throws(LockingError) {
        let client = try registration.withLock { (current) throws(LockingError) -> SanlockRegistration in
            if let current, held != nil { return current }
            let fresh = try SanlockRegistration.shared()
            current = fresh
            return fresh
        }
        var resource = try self.resource(image, mode: mode, create: true)!
        let result = try client.hold(&resource, key: holdKey(image), mode: mode, converting: held != nil, image: image)
        guard result < 0 else { return }
        throw refusal(result, image: image, mode: mode)
    }

    /// Nothing to give back once the leases were lost: the fence already released them.
    public func release(_ image: LeasedImage) throws(LockingError) {
        guard let client = registration.withLock({ $0 }), client.loss == nil,
              var resource = try self.resource(image, mode: .exclusive, create: false) else { return }
        let result = client.drop(&resource, key: holdKey(image), descriptor: image.descriptor)
        if result < 0 && !SanlockLibrary.isDaemonMissing(result) {
            throw LockingError(.ioError, "Could not release the lease on '\(image.path)' (\(description)): \(SanlockLibrary.words(result))", path: image.path)
        }
    }

    /// From `sanlock_read_resource_owners`, named from the lease folder's host files. Of several
    /// shared holders sanlock may list only some.
    public func owners(of image: LeasedImage) throws(LockingError) -> [LeaseOwner] {
        try SanlockLibrary.load()
        guard var resource = try self.resource(image, mode: .exclusive, create: false) else { return [] }
        var hosts: UnsafeMutablePointer<blk_sanlk_host>?
        var count: Int32 = 0
        let result = blk_sanlock_read_resource_owners(&resource, 0, &hosts, &count)
        defer { blk_sanlock_free(hosts) }
        guard result >= 0 else {
            throw LockingError(.leaseUnavailable, "Could not read the owners of the lease on '\(image.path)' (\(description)): \(SanlockLibrary.words(result))", path: image.path)
        }
        // sanlock marks the resource shared when it is held so; of several shared holders it
        // may list only some.
        let mode: LeaseMode = resource.flags & UInt32(BLK_SANLK_RES_SHARED) != 0 ? .shared : .exclusive
        let names = LeaseHostNames(settings: settings)
        return (0..<Int(count)).map { index in
            let host = hosts![index]
            return LeaseOwner(hostID: host.host_id, hostName: names.name(of: host.host_id), generation: host.generation, mode: mode)
        }
    }

    /// Asks the hosts holding the lease on `image` to give it up: gracefully (sanlock runs the
    /// holder's kill path, and a BlockLayer holder fences itself and releases) or by force
    /// (SIGKILL). The owner's daemon acts on its next lease renewal.
    public func revoke(_ image: LeasedImage, force: Bool) throws(LockingError) {
        try SanlockLibrary.load()
        guard var resource = try self.resource(image, mode: .exclusive, create: false) else {
            throw LockingError(.notFound, "'\(image.path)' has no lease in \(description)", path: image.path)
        }
        // sanlock passes requests to an exclusive holder only: a shared lease has no one to ask.
        if let owner = try owners(of: image).first, owner.mode == .shared {
            throw LockingError(.invalidRequest, "the lease on \(image.path) is held shared (by \(owner) and maybe others): sanlock can revoke only an exclusive holder", path: image.path)
        }
        var result = blk_sanlock_read_resource(&resource, 0)
        guard result >= 0 else { throw unavailable(result, doing: "read", image) }
        // A request names a lease version above the one held.
        resource.lver += 1
        resource.flags |= UInt32(BLK_SANLK_RES_LVER)
        result = blk_sanlock_request(0, UInt32(force ? BLK_SANLK_REQ_FORCE : BLK_SANLK_REQ_GRACEFUL), &resource)
        guard result >= 0 else { throw unavailable(result, doing: "revoke", image) }
    }

    /// Where the image's lease sits (made on first use), for tools that speak to sanlock
    /// directly, such as the benchmark's baseline.
    public func leaseLocation(of image: LeasedImage) throws(LockingError) -> (path: String, offset: UInt64) {
        try SanlockLibrary.load()
        let location = try self.location(of: image, create: true)!
        return (location.path, location.offset)
    }

    // MARK: resources

    /// One resource of one lockspace, as sanlock tells resources apart (and this process's holds
    /// are counted): not by where the lease lives, which two opens may spell differently.
    private func holdKey(_ image: LeasedImage) -> String {
        settings.lockspace + "\0" + image.resourceName
    }

    private func resource(_ image: LeasedImage, mode: LeaseMode, create: Bool) throws(LockingError) -> blk_sanlk_resource? {
        guard let location = try location(of: image, create: create) else { return nil }
        var resource = blk_sanlk_resource()
        SanlockLibrary.copy(settings.lockspace, into: &resource.lockspace_name)
        SanlockLibrary.copy(image.resourceName, into: &resource.name)
        resource.flags = mode == .shared ? UInt32(BLK_SANLK_RES_SHARED) : 0
        resource.num_disks = 1
        SanlockLibrary.copy(location.path, into: &resource.disks.path)
        resource.disks.offset = location.offset
        return resource
    }

    struct Location: Hashable {
        var path: String
        var offset: UInt64
    }

    private static let knownLocations = Mutex<[String: Location]>([:])

    /// Where the image's lease is; nil when it was never made and `create` is false.
    func location(of image: LeasedImage, create: Bool) throws(LockingError) -> Location? {
        let key = settings.location + "\0" + holdKey(image)
        if let known = Self.knownLocations.withLock({ $0[key] }) { return known }
        let found: Location?
        switch settings.layout {
        case .directory: found = try fileLocation(of: image, create: create)
        case .area: found = try indexedLocation(of: image, create: create)
        case nil:
            throw LockingError(.leaseUnavailable, "Could not use the lease folder '\(settings.location)' for \(image.path): \(Errno.current); is the shared storage mounted?",
                               path: image.path)
        }
        if let found { Self.knownLocations.withLock { $0[key] = found } }
        return found
    }

    private func fileLocation(of image: LeasedImage, create: Bool) throws(LockingError) -> Location? {
        let path = settings.location + "/" + settings.lockspace + "." + image.resourceName.dropFirst(4) + ".lease"
        if access(path, F_OK) == 0 { return Location(path: path, offset: 0) }
        guard create else { return nil }
        // Hosts share the folder and may share pids: the name must be this attempt's alone.
        let temporary = settings.location + "/." + settings.lockspace + "." + image.resourceName + ".\(UInt64.random(in: 0...UInt64.max)).new"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw LockingError(.leaseUnavailable, "Could not make the lease file for '\(image.path)' in '\(settings.location)': \(Errno.current)", path: image.path)
        }
        defer { unlink(temporary) }
        let sized = ftruncate(descriptor, off_t(Self.leaseBytes))
        close(descriptor)
        guard sized == 0 else {
            throw LockingError(.leaseUnavailable, "Could not size the lease file for '\(image.path)' in '\(settings.location)': \(Errno.current)", path: image.path)
        }
        var resource = blk_sanlk_resource()
        SanlockLibrary.copy(settings.lockspace, into: &resource.lockspace_name)
        SanlockLibrary.copy(image.resourceName, into: &resource.name)
        resource.num_disks = 1
        SanlockLibrary.copy(temporary, into: &resource.disks.path)
        let result = blk_sanlock_write_resource(&resource, 0, 0, 0)
        guard result >= 0 else { throw unavailable(result, doing: "make", image) }
        // link, not rename: a host that lost the race keeps the winner's file (and its lease state).
        if link(temporary, path) != 0 && Errno.current != .fileExists {
            throw LockingError(.leaseUnavailable, "Could not put the lease file for '\(image.path)' in place: \(Errno.current)", path: image.path)
        }
        return Location(path: path, offset: 0)
    }

    private func indexedLocation(of image: LeasedImage, create: Bool) throws(LockingError) -> Location? {
        var index = blk_sanlk_rindex()
        SanlockLibrary.copy(settings.lockspace, into: &index.lockspace_name)
        SanlockLibrary.copy(settings.location, into: &index.disk.path)
        index.disk.offset = Self.indexOffset
        var entry = blk_sanlk_rentry()
        SanlockLibrary.copy(image.resourceName, into: &entry.name)
        var result = blk_sanlock_lookup_rindex(&index, 0, &entry)
        if result == -ENOENT && create {
            result = blk_sanlock_create_resource(&index, 0, &entry, 0, 0)
            if result == -EEXIST { result = blk_sanlock_lookup_rindex(&index, 0, &entry) }
        }
        if result == -ENOENT && !create { return nil }
        guard result >= 0 else { throw unavailable(result, doing: create ? "find or create" : "find", image) }
        return Location(path: settings.location, offset: entry.offset)
    }

    // MARK: errors

    private func unavailable(_ result: Int32, doing what: String, _ image: LeasedImage) -> LockingError {
        if SanlockLibrary.isDaemonMissing(result) {
            return SanlockLibrary.daemonUnreachable(result, doing: "\(what) the lease on '\(image.path)'")
        }
        let hint: String = switch result {
        case -ENOSPC, -ENOENT, Int32(BLK_SANLK_ACQUIRE_LOCKSPACE):
            "this host has not joined lockspace '\(settings.lockspace)': run blk lease join --host-id N"
        case Int32(BLK_SANLK_RINDEX_MAGIC), Int32(BLK_SANLK_LEADER_MAGIC):
            "'\(settings.location)' holds no lockspace '\(settings.lockspace)': lay it out with blk lease init"
        default:
            "check that the lease storage '\(settings.location)' is reachable"
        }
        return LockingError(.leaseUnavailable, "Could not \(what) the lease on '\(image.path)' in \(description): \(SanlockLibrary.words(result)); \(hint)", path: image.path)
    }

    private func refusal(_ result: Int32, image: LeasedImage, mode: LeaseMode) -> LockingError {
        let sanlockConflicts: [Int] = [BLK_SANLK_ACQUIRE_IDLIVE, BLK_SANLK_ACQUIRE_OWNED, BLK_SANLK_ACQUIRE_OTHER,
                                       BLK_SANLK_ACQUIRE_SHRETRY, BLK_SANLK_ACQUIRE_OWNED_RETRY]
        // EEXIST: another client on this host holds it (an open with --locking off, or whose
        // OFD locks allowed it).
        let conflicts = sanlockConflicts.map { Int32($0) } + [-EAGAIN, -EBUSY, -EEXIST]
        guard conflicts.contains(result) else { return unavailable(result, doing: "acquire", image) }
        var owners = (try? self.owners(of: image)) ?? []
        let hosts = (try? SanlockLockspace(settings: settings).hosts()) ?? []
        for index in owners.indices {
            owners[index].hostState = hosts.first { $0.id == owners[index].hostID }?.state
        }
        let who = owners.isEmpty ? "another host" : owners.map(\.description).joined(separator: " and ")
        let failing = owners.contains { $0.hostState == "fail" || $0.hostState == "dead" }
        let expiry = failing ? "; a host that stopped renewing its lease gives the image up when that lease expires (8 × io_timeout + 60 s after it stopped)" : ""
        return LockingError(.conflict, "Failed to get lease on \(image.path): held by \(who)\(expiry)", path: image.path, leaseOwners: owners)
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
