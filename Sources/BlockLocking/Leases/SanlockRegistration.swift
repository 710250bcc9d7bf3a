// SanlockRegistration: this process as a sanlock client — the registered connection every lease
// is acquired through, and the fence that stops writes when sanlock takes the leases away.
//
// sanlock (without a hardware watchdog) revokes a lease by killing its holder: when the host's
// lockspace fails or is removed it runs the client's kill path, and SIGKILLs if that does not
// end the pid's hold. Our kill path is `blk lease fence PID`, which tells the registration's
// watcher over an abstract Unix socket named after the pid; the watcher marks every lease of this
// process lost before anything else — writes check that mark — and then closes the registration,
// which is how sanlock learns the pid holds nothing any more. If the daemon itself goes away, the
// registration socket hangs up and the watcher fences the same way.
import CSanlock
import Glibc
import Synchronization
import SystemPackage

final class SanlockRegistration: Sendable {
    /// The connection leases are acquired on (socket -1 once closed by the fence), and what this
    /// process holds through it. Leases are counted as the seed counted its lock calls: sanlock
    /// grants a resource once per client, so a second open of an image in this process (two
    /// overlays over one backing file) shares the first's lease, and the last release gives it back.
    private let connection: Mutex<Connection>

    struct Connection {
        var socket: Int32
        var holds: [String: (mode: LeaseMode, count: Int)] = [:]
    }
    private let lost = Atomic<Bool>(false)
    private let lossError = Mutex<LockingError?>(nil)

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
        let socket = blk_sanlock_register()
        guard socket >= 0 else {
            throw SanlockLibrary.daemonUnreachable(socket, doing: "register with sanlock")
        }
        // No child process may inherit the registration: sanlock would count it as ours.
        _ = fcntl(socket, F_SETFD, FD_CLOEXEC)
        connection = Mutex(Connection(socket: socket))
        let fence = Self.bindFenceSocket()
        if fence >= 0, let helper = Self.fenceHelper {
            // The pid goes in the arguments: sanlock appends it (SANLK_KILLPATH_PID) only on some paths.
            var arguments = Array("lease fence \(getpid())".utf8CString)
            _ = blk_sanlock_killpath(socket, 0, helper, &arguments)
        }
        startWatcher(socket: socket, fence: fence)
    }

    /// Takes the resource `key` in `mode` for one more open of this process, or (`converting`)
    /// changes the mode of the one open's lease; 0, or sanlock's negative result.
    func hold(_ resource: inout blk_sanlk_resource, key: String, mode: LeaseMode, converting: Bool,
              image: LeasedImage) throws(LockingError) -> Int32 {
        try connection.withLock { (connection) throws(LockingError) -> Int32 in
            if let loss { throw loss }
            if let existing = connection.holds[key] {
                if existing.mode == mode {
                    if !converting { connection.holds[key]!.count += 1 }
                    return 0
                }
                guard converting, existing.count == 1 else {
                    throw LockingError(.conflict, "Failed to get lease on \(image.path): another open of this process holds it \(existing.mode)",
                                       path: image.path)
                }
                let result = blk_sanlock_convert(connection.socket, -1, 0, &resource)
                if result == 0 { connection.holds[key]!.mode = mode }
                return result
            }
            var options = blk_sanlk_options()
            SanlockLibrary.copy(ownerName, into: &options.owner_name)
            // No waiting for a failed owner's lease to expire (8 × io_timeout + 60 s): a conflict
            // is answered at once, as every lock conflict is, and the caller may retry.
            let result = blk_sanlock_acquire(connection.socket, -1, UInt32(BLK_SANLK_ACQUIRE_OWNER_NOWAIT), &resource, &options)
            if result == 0 { connection.holds[key] = (mode, 1) }
            return result
        }
    }

    /// Gives up one open's hold on `key`; the last one releases the lease. 0, or sanlock's
    /// negative result; nothing to do once fenced (sanlock released everything then).
    func drop(_ resource: inout blk_sanlk_resource, key: String) -> Int32 {
        connection.withLock { connection -> Int32 in
            guard loss == nil, let existing = connection.holds[key] else { return 0 }
            if existing.count > 1 {
                connection.holds[key]!.count -= 1
                return 0
            }
            connection.holds[key] = nil
            return blk_sanlock_release(connection.socket, -1, 0, &resource)
        }
    }

    /// "blk[4121]": what sanlock's status shows as the owner of a lease this process holds.
    /// (A registration belongs to one process: a forked child registers anew, so the pid holds.)
    private let ownerName = "\(readProcFile("/proc/self/comm").map { String($0.prefix { $0 != "\n" }) } ?? "pid")[\(getpid())]"

    var loss: LockingError? {
        guard lost.load(ordering: .acquiring) else { return nil }
        return lossError.withLock { $0 }
    }

    /// Marks every lease of this process lost — first, so no write slips through — then closes
    /// the registration so that sanlock releases what the pid held.
    private func fence(_ error: LockingError) {
        lossError.withLock { if $0 == nil { $0 = error } }
        lost.store(true, ordering: .releasing)
        connection.withLock { connection in
            if connection.socket >= 0 { close(connection.socket) }
            connection.socket = -1
            connection.holds = [:]
        }
    }

    // MARK: the watcher

    private static var fenceSocketName: String { "blocklayer-lease-fence.\(getpid())" }

    /// Where the kill path's `blk` is: BLK_LEASE_FENCE_HELPER, else a `blk` beside this
    /// executable. Without one sanlock falls back to SIGKILL, which fences too, only harder.
    static var fenceHelper: String? {
        if let path = getenv("BLK_LEASE_FENCE_HELPER") { return String(cString: path) }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let executable = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let folder = executable.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let candidate = folder + "/blk"
        return access(candidate, X_OK) == 0 ? candidate : nil
    }

    /// An abstract datagram socket the kill path writes to; -1 if it cannot be had.
    private static func bindFenceSocket() -> Int32 {
        let fence = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fence >= 0 else { return -1 }
        var address = abstractAddress(fenceSocketName)
        let bound = withUnsafePointer(to: &address.address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fence, $0, address.length) }
        }
        if bound != 0 {
            close(fence)
            return -1
        }
        return fence
    }

    static func abstractAddress(_ name: String) -> (address: sockaddr_un, length: socklen_t) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            path[0] = 0 // abstract: no file, gone with the process
            for (index, byte) in bytes.prefix(path.count - 1).enumerated() { path[index + 1] = byte }
        }
        let length = MemoryLayout<sa_family_t>.size + 1 + min(bytes.count, 106)
        return (address, socklen_t(length))
    }

    /// Tells the process `pid` to fence itself (what `blk lease fence` does for sanlock).
    static func sendFence(to pid: Int32, reason: String) throws(LockingError) {
        let sender = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard sender >= 0 else { throw LockingError(.ioError, "Could not make a socket: \(Errno.current)") }
        defer { close(sender) }
        var address = abstractAddress("blocklayer-lease-fence.\(pid)")
        let message = Array(reason.utf8)
        let sent = withUnsafePointer(to: &address.address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(sender, message, message.count, 0, $0, address.length) }
        }
        if sent < 0 {
            throw LockingError(.notFound, "Could not fence pid \(pid): it has no BlockLayer lease registration (\(Errno.current))")
        }
    }

    private func startWatcher(socket: Int32, fence: Int32) {
        let watcher = Watcher(registration: self, socket: socket, fence: fence)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(watcher).toOpaque()
        let started = pthread_create(&thread, nil, { context in
            let watcher = Unmanaged<Watcher>.fromOpaque(context!).takeRetainedValue()
            watcher.run()
            return nil
        }, context)
        if started == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<Watcher>.fromOpaque(context).release()
        }
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
            defer { if fence >= 0 { close(fence) } }
            // Only a hang-up on the registration: acquire and release read their replies from it.
            let hangUp = Int16(POLLHUP) | Int16(POLLERR) | Self.readHangUp
            var descriptors = [pollfd(fd: socket, events: Self.readHangUp, revents: 0),
                               pollfd(fd: fence, events: Int16(POLLIN), revents: 0)]
            while true {
                let ready = poll(&descriptors, nfds_t(fence >= 0 ? 2 : 1), -1)
                if ready < 0 {
                    if Errno.current == .interrupted { continue }
                    return
                }
                if fence >= 0 && descriptors[1].revents & Int16(POLLIN) != 0 {
                    var buffer = [UInt8](repeating: 0, count: 256)
                    let count = recv(fence, &buffer, buffer.count, 0)
                    let reason = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : "sanlock ran the kill path"
                    registration.fence(LockingError(.lockLost, "this host's sanlock lease was revoked (\(reason)): the lockspace failed or was removed, and another host may take the image; no more writes are issued"))
                    return
                }
                if descriptors[0].revents & hangUp != 0 {
                    registration.fence(LockingError(.lockLost, "the sanlock daemon went away, and with it this process's leases: another host may take the image; no more writes are issued"))
                    return
                }
            }
        }
    }
}
