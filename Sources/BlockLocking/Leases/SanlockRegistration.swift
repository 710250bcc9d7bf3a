// SanlockRegistration: this process as a sanlock client — the registered connection every lease
// is acquired through, and the fence that stops writes when sanlock takes the leases away.
//
// sanlock (without a hardware watchdog) revokes a lease by killing its holder: when the host's
// lockspace fails, or another host asks for the lease, it runs the client's kill path, and
// SIGKILLs if that does not end the pid's hold. Our kill path is `blk lease fence PID`, which
// tells the registration's watcher over an abstract Unix socket with a random name (only root or
// this process's user are heard). If the daemon itself goes away, the registration hangs up.
// Either way the watcher fences: it marks the leases lost, so no new write starts; waits for the
// writes already under way; syncs every leased file, so what was written under the lease is on
// the storage before the lease is; and only then closes the registration, which is how sanlock
// learns the pid holds nothing.
import CLinuxLocking
import CSanlock
import Glibc
import Posix
import Synchronization
import SystemPackage

final class SanlockRegistration: Sendable {
    /// The connection leases are acquired on (socket -1 once closed by the fence), and what this
    /// process holds through it. Holds are counted as the seed counted its lock calls: sanlock
    /// grants a resource once per client, so a second open of an image in this process (two
    /// overlays over one backing file) shares the first's lease, and the last release gives it back.
    private let connection: Mutex<Connection>

    struct Connection {
        var socket: Int32
        var holds: [String: Hold] = [:]
    }

    struct Hold {
        var mode: LeaseMode
        var count: Int
        /// Per open of the leased file: its descriptor, and a duplicate of our own that the fence
        /// syncs before the lease goes — valid even if the open closed its own meanwhile.
        var descriptors: [(opened: Int32, synced: Int32)]
    }

    /// sanlock keeps at most this many resources per client (SANLK_MAX_RESOURCES).
    static let maximumLeases = 8

    private let lost = Atomic<Bool>(false)
    private let lossError = Mutex<LockingError?>(nil)
    /// Writes between beginWrite and endWrite: the fence waits for them before giving leases up.
    private let writesInFlight = Atomic<Int>(0)

    /// "blk[4121]": what sanlock's status shows as the owner of a lease this process holds.
    private let ownerName = "\(readProcFile("/proc/self/comm").map { String($0.prefix { $0 != "\n" }) } ?? "pid")[\(getpid())]"

    private static let current = Mutex<SanlockRegistration?>(nil)

    /// The registration this process acquires through: the existing one, or a new one when there
    /// is none or the last was fenced.
    static func shared() throws(LockingError) -> SanlockRegistration {
        try SanlockLibrary.load()
        return try current.withLock { (current) throws(LockingError) in
            if let existing = current, existing.loss == nil { return existing }
            let fresh = try SanlockRegistration()
            current = fresh
            return fresh
        }
    }

    private init() throws(LockingError) {
        Self.exitWaitsForFences()
        // Before registering: a failed kill path setup must not leave a registration behind.
        let fence = try Self.bindFenceSocket()
        let socket = blk_sanlock_register()
        guard socket >= 0 else {
            close(fence)
            throw SanlockLibrary.daemonUnreachable(socket, doing: "register with sanlock")
        }
        // No child process may inherit the registration: sanlock would count it as ours. (A child
        // forked between register and this line would; sanlock offers no close-on-exec register.)
        _ = fcntl(socket, F_SETFD, FD_CLOEXEC)
        connection = Mutex(Connection(socket: socket))
        do throws(LockingError) {
            try Self.setKillPath(socket)
            try startWatcher(socket: socket, fence: fence)
        } catch {
            close(socket)
            close(fence)
            throw error
        }
    }

    /// Takes the resource `key` in `mode` for one more open of this process, or (`converting`)
    /// changes the mode of the one open's lease; 0, or sanlock's negative result.
    func hold(_ resource: inout blk_sanlk_resource, key: String, mode: LeaseMode, converting: Bool,
              image: LeasedImage) throws(LockingError) -> Int32 {
        try connection.withLock { (connection) throws(LockingError) -> Int32 in
            if let loss { throw loss }
            if let existing = connection.holds[key] {
                if existing.mode == mode {
                    if !converting {
                        connection.holds[key]!.count += 1
                        connection.holds[key]!.descriptors.append(Self.syncedCopy(of: image.descriptor))
                    }
                    return 0
                }
                guard converting, existing.count == 1 else {
                    throw LockingError(.conflict, "Failed to get lease on \(image.path): another open of this process holds it \(existing.mode)",
                                       path: image.path)
                }
                // No waiting for a failed co-owner's lease to expire: answered at once, like acquire.
                let result = blk_sanlock_convert(connection.socket, -1, UInt32(BLK_SANLK_ACQUIRE_OWNER_NOWAIT), &resource)
                if result == 0 { connection.holds[key]!.mode = mode }
                return result
            }
            guard connection.holds.count < Self.maximumLeases else {
                throw LockingError(.leaseUnavailable, "Could not get the lease on \(image.path): sanlock grants one process at most \(Self.maximumLeases) leases, and this process holds \(Self.maximumLeases) (a backing chain counts each file)",
                                   path: image.path)
            }
            var options = blk_sanlk_options()
            SanlockLibrary.copy(ownerName, into: &options.owner_name)
            // No waiting for a failed owner's lease to expire (8 × io_timeout + 60 s): a conflict
            // is answered at once, as every lock conflict is, and the caller may retry.
            let result = blk_sanlock_acquire(connection.socket, -1, UInt32(BLK_SANLK_ACQUIRE_OWNER_NOWAIT), &resource, &options)
            if result == 0 { connection.holds[key] = Hold(mode: mode, count: 1, descriptors: [Self.syncedCopy(of: image.descriptor)]) }
            return result
        }
    }

    private static func syncedCopy(of descriptor: Int32) -> (opened: Int32, synced: Int32) {
        (descriptor, descriptor >= 0 ? fcntl(descriptor, F_DUPFD_CLOEXEC, 0) : -1)
    }

    /// Gives up one open's hold on `key`; the last one releases the lease. 0, or sanlock's
    /// negative result; nothing to do once fenced (sanlock released everything then).
    func drop(_ resource: inout blk_sanlk_resource, key: String, descriptor: Int32) -> Int32 {
        connection.withLock { connection -> Int32 in
            guard loss == nil, var existing = connection.holds[key] else { return 0 }
            if existing.count > 1 {
                existing.count -= 1
                if let index = existing.descriptors.firstIndex(where: { $0.opened == descriptor }) {
                    if existing.descriptors[index].synced >= 0 { close(existing.descriptors[index].synced) }
                    existing.descriptors.remove(at: index)
                }
                connection.holds[key] = existing
                return 0
            }
            connection.holds[key] = nil
            for copy in existing.descriptors where copy.synced >= 0 { close(copy.synced) }
            return blk_sanlock_release(connection.socket, -1, 0, &resource)
        }
    }

    var loss: LockingError? {
        guard lost.load(ordering: .acquiring) else { return nil }
        return lossError.withLock { $0 }
    }

    /// Admits one write to a leased file, unless the leases are lost. Counted before the check,
    /// so the fence, which marks first and counts after, either refuses a write or waits for it.
    func beginWrite() throws(LockingError) {
        writesInFlight.add(1, ordering: .sequentiallyConsistent)
        if lost.load(ordering: .sequentiallyConsistent) {
            writesInFlight.subtract(1, ordering: .sequentiallyConsistent)
            throw loss ?? LockingError(.lockLost, "this process's sanlock leases are lost")
        }
    }

    func endWrite() {
        writesInFlight.subtract(1, ordering: .sequentiallyConsistent)
    }

    /// Stops every write, lets the ones under way finish and reach the storage, then gives the
    /// leases up by closing the registration.
    private func fence(_ error: LockingError) {
        Self.fencesUnderWay.add(1, ordering: .sequentiallyConsistent)
        defer { Self.fencesUnderWay.subtract(1, ordering: .sequentiallyConsistent) }
        lossError.withLock { if $0 == nil { $0 = error } }
        lost.store(true, ordering: .sequentiallyConsistent)
        // A write holds no lock the fence needs, and every admission covers a bounded piece
        // (FileDriver.swift), so this ends. No deadline: giving the lease up while an admitted
        // write may still land would let it land after another host took the image. On a hung
        // storage sanlock's own escalation takes over (SIGKILL), and the registration closes only
        // when the process is gone.
        while writesInFlight.load(ordering: .sequentiallyConsistent) > 0 {
            usleep(1000)
        }
        connection.withLock { connection in
            for hold in connection.holds.values {
                for copy in hold.descriptors where copy.synced >= 0 {
                    _ = FileDescriptor(rawValue: copy.synced).synchronizeData()
                    close(copy.synced)
                }
            }
            if connection.socket >= 0 { close(connection.socket) }
            connection.socket = -1
            connection.holds = [:]
        }
    }

    /// Fences under way in this process. A command that fails with `lock-lost` may reach exit
    /// while the watcher is still fencing; exiting would close the registration, giving the lease
    /// up before the writes under way ended and the leased files were synced. So exit waits for
    /// them (counted before the loss is marked, so whoever saw the loss sees the count).
    private static let fencesUnderWay = Atomic<Int>(0)

    private static let waitAtExit: Void = {
        atexit {
            while SanlockRegistration.fencesUnderWay.load(ordering: .sequentiallyConsistent) > 0 { usleep(1000) }
        }
    }()

    private static func exitWaitsForFences() { _ = waitAtExit }

    // MARK: the kill path and the watcher

    // The fence socket. An abstract name has no owner and no permissions: any local user may
    // bind any name first. A name derived from the pid could be taken in advance for the next
    // few thousand pids, failing every leased open. So the name is 128 random bits from the
    // system RNG (getrandom), which no one can bind before we do, and `blk lease fence PID`
    // finds it among the sockets PID itself has open (its /proc fd links, matched by inode in
    // /proc/PID/net/unix): a socket someone else bound, whatever its name, is never chosen.
    // Preferred to a socket file in a per-user runtime folder: nothing is left behind when the
    // process is killed, no folder's owner and mode must be trusted (a folder under /tmp can
    // itself be squatted, /run/user may not exist for root or in containers), and the rule for
    // who may look is the kernel's own for /proc/PID/fd — root (sanlock) or the same user, the
    // same senders the watcher hears.
    static let fenceSocketPrefix = "blocklayer-lease-fence."

    private static func randomFenceSocketName() -> String {
        var generator = SystemRandomNumberGenerator()
        let bits = (0..<2).map { _ in String(generator.next() as UInt64, radix: 16).leftPadded(to: 16) }
        return fenceSocketPrefix + bits.joined()
    }

    /// Where the kill path's `blk` is: BLK_LEASE_FENCE_HELPER, else a `blk` beside this
    /// executable. Without one sanlock falls back to SIGKILL, which fences too, only harder.
    static var fenceHelper: String? {
        if let path = getenv("BLK_LEASE_FENCE_HELPER") { return String(cString: path) }
        guard case .success(let folder) = currentExecutableFolder() else { return nil }
        let candidate = folder + "/blk"
        return access(candidate, X_OK) == 0 ? candidate : nil
    }

    /// Has sanlock run `HELPER lease fence PID` instead of killing this process. sanlock keeps
    /// at most 127 bytes of path and of arguments; a helper it would cut is refused here.
    private static func setKillPath(_ socket: Int32) throws(LockingError) {
        guard let helper = fenceHelper else { return }
        guard helper.utf8.count < 128 else {
            throw LockingError(.leaseUnavailable, "the lease fence helper's path '\(helper)' is longer than sanlock's 127 bytes: install blk in a shorter path or set BLK_LEASE_FENCE_HELPER")
        }
        // The pid is in the arguments rather than appended by sanlock (SANLK_KILLPATH_PID): the
        // kill path sanlock runs for another host's request arrived here without it.
        var arguments = Array("lease fence \(getpid())".utf8CString)
        let result = blk_sanlock_killpath(socket, 0, helper, &arguments)
        guard result >= 0 else {
            throw LockingError(.leaseUnavailable, "Could not give sanlock its kill path (\(helper)): \(SanlockLibrary.words(result))")
        }
    }

    /// The abstract datagram socket the kill path writes to.
    private static func bindFenceSocket() throws(LockingError) -> Int32 {
        let fence = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fence >= 0 else { throw LockingError(.leaseUnavailable, "Could not make the lease fence socket: \(Errno.current)") }
        let name = randomFenceSocketName()
        var address = abstractAddress(name)
        let bound = withUnsafePointer(to: &address.address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fence, $0, address.length) }
        }
        guard bound == 0, blk_pass_credentials(fence) == 0 else {
            let error = Errno.current
            close(fence)
            throw LockingError(.leaseUnavailable, "Could not listen for sanlock's kill path on @\(name): \(error)")
        }
        return fence
    }

    static func abstractAddress(_ name: String) -> (address: sockaddr_un, length: socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8.prefix(106))
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            path[0] = 0 // abstract: no file, gone with the process
            for (index, byte) in bytes.enumerated() { path[index + 1] = byte }
        }
        return (address, socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count))
    }

    /// Tells the process `pid` to fence itself (what `blk lease fence` does for sanlock).
    static func sendFence(to pid: Int32, reason: String) throws(LockingError) {
        let names = try fenceSocketNames(of: pid)
        guard !names.isEmpty else {
            throw LockingError(.notFound, "Could not fence pid \(pid): it has no BlockLayer lease registration")
        }
        let sender = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard sender >= 0 else { throw LockingError(.ioError, "Could not make a socket: \(Errno.current)") }
        defer { close(sender) }
        let message = Array(reason.utf8)
        for name in names {
            var address = abstractAddress(name)
            let sent = withUnsafePointer(to: &address.address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(sender, message, message.count, 0, $0, address.length) }
            }
            if sent < 0 {
                throw LockingError(.notFound, "Could not fence pid \(pid): its lease registration did not take the message (\(Errno.current))")
            }
        }
    }

    /// The abstract names of the fence sockets `pid` has open: its descriptors that are sockets,
    /// by inode, looked up in the socket table of its own network namespace.
    static func fenceSocketNames(of pid: Int32) throws(LockingError) -> [String] {
        guard let descriptors = listDirectory("/proc/\(pid)/fd") else {
            let error = Errno.current
            if error == .noSuchFileOrDirectory {
                throw LockingError(.notFound, "Could not fence pid \(pid): no such process")
            }
            throw LockingError(.ioError, "Could not fence pid \(pid): its descriptors cannot be listed (\(error)); only root or its own user may fence it")
        }
        var socketInodes = Set<Substring>()
        var target = [CChar](repeating: 0, count: 64)
        for descriptor in descriptors {
            let length = readlink("/proc/\(pid)/fd/\(descriptor)", &target, target.count - 1)
            guard length > 0 else { continue }
            let link = String(decoding: target[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if link.hasPrefix("socket:["), link.hasSuffix("]") { socketInodes.insert(link.dropFirst(8).dropLast()) }
        }
        guard let table = readProcFile("/proc/\(pid)/net/unix") else {
            throw LockingError(.ioError, "Could not fence pid \(pid): /proc/\(pid)/net/unix cannot be read (\(Errno.current))")
        }
        // "Num RefCount Protocol Flags Type St Inode Path", the path "@name" for an abstract one.
        return table.split(separator: "\n").dropFirst().compactMap { line -> String? in
            let fields = line.split(separator: " ", maxSplits: 7)
            guard fields.count == 8, socketInodes.contains(fields[6]), fields[7].hasPrefix("@" + fenceSocketPrefix) else { return nil }
            return String(fields[7].dropFirst())
        }
    }

    private func startWatcher(socket: Int32, fence: Int32) throws(LockingError) {
        let watcher = Watcher(registration: self, socket: socket, fence: fence)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(watcher).toOpaque()
        let started = pthread_create(&thread, nil, { context in
            let watcher = Unmanaged<Watcher>.fromOpaque(context!).takeRetainedValue()
            watcher.run()
            return nil
        }, context)
        guard started == 0 else {
            Unmanaged<Watcher>.fromOpaque(context).release()
            throw LockingError(.leaseUnavailable, "Could not start the lease watcher thread: \(Errno(rawValue: started))")
        }
        pthread_detach(thread)
    }

    /// Blocks in poll on the registration and the fence socket; ends once it has fenced.
    private final class Watcher: @unchecked Sendable {
        let registration: SanlockRegistration
        let socket: Int32
        let fence: Int32

        init(registration: SanlockRegistration, socket: Int32, fence: Int32) {
            self.registration = registration
            self.socket = socket
            self.fence = fence
        }

        /// POLLRDHUP, which Glibc's Swift module hides behind _GNU_SOURCE.
        static let readHangUp: Int16 = 0x2000

        func run() {
            // Only a hang-up on the registration: acquire and release read their replies from it,
            // and a poll that asks for no input is not woken by them.
            let hangUp = Int16(POLLHUP) | Int16(POLLERR) | Self.readHangUp
            var descriptors = [pollfd(fd: socket, events: Self.readHangUp, revents: 0),
                               pollfd(fd: fence, events: Int16(POLLIN), revents: 0)]
            let reason: LockingError
            watching: while true {
                if poll(&descriptors, 2, -1) < 0 {
                    if Errno.current == .interrupted { continue }
                    // Nothing would watch any more: fence rather than write unguarded.
                    reason = LockingError(.lockLost, "the lease watcher failed (poll: \(Errno.current)); no more writes are issued")
                    break watching
                }
                if descriptors[1].revents & Int16(POLLIN) != 0 {
                    var buffer = [UInt8](repeating: 0, count: 256)
                    var sender: Int64 = -1
                    let count = blk_receive_with_sender(fence, &buffer, UInt(buffer.count), &sender)
                    // Anyone on the host can send to an abstract socket; only root (sanlock) and
                    // this process's own user may fence it.
                    guard count >= 0, sender == 0 || sender == Int64(getuid()) else { continue }
                    let text = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : "sanlock ran the kill path"
                    reason = LockingError(.lockLost, "this host's sanlock lease was revoked (\(text)): the lockspace failed or another host asked for the image; no more writes are issued")
                    break watching
                }
                if descriptors[0].revents & hangUp != 0 {
                    reason = LockingError(.lockLost, "the sanlock daemon went away, and with it this process's leases: another host may take the image; no more writes are issued")
                    break watching
                }
            }
            // Closed before the registration is marked lost, and a new registration is made only
            // after that: a process has at most one fence socket for `blk lease fence` to find.
            close(fence)
            registration.fence(reason)
        }
    }
}
