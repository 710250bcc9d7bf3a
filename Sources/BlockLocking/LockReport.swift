// LockReport: every lock on an image, in words — what `blk locks` prints.
//
// Two sources, because neither sees everything: F_OFD_GETLK probes through a descriptor that
// holds no locks see every lock that could conflict, including those of other hosts on NFS, but
// not who holds them; /proc (LockHolderScan) names local holders. A byte the probes find locked
// that no local holder explains is reported as held by a process this host cannot see.
import SystemPackage

/// Everything known about the locks on one image, in one value (what `blk locks` prints and
/// encodes), gathered from two sources because neither sees everything: byte probes see other
/// hosts' locks, /proc names local holders.
public struct LockReport: Sendable, Hashable {
    /// The image as the caller named it, for the report's first line.
    public var path: String
    /// Permissions some open holds (a shared lock on byte 100+i).
    public var heldPermissions: ImagePermissions
    /// Permissions some open refuses to share (a shared lock on byte 200+i).
    public var unsharedPermissions: ImagePermissions
    /// The transaction lock's kind, nil when free.
    public var transactionLock: LockKind?
    /// The local processes holding locks on the image, with their locks in words.
    public var holders: [LockHolder]
    /// Requests blocked in the kernel, waiting for a lock on the image.
    public var waiters: [LockRecord]
    /// Bytes locked by an owner that /proc on this host does not show.
    public var invisibleBytes: [Int64]

    /// Inspects the image behind `descriptor`, which must hold no locks of its own. The locks of
    /// `excluding` (this process's own open of the image, if any) are not listed as holders.
    public static func inspect(descriptor: FileDescriptor, path: String, excluding: FileDescriptor? = nil) throws(LockingError) -> LockReport {
        let locker = ByteLocker(descriptor: descriptor, flavor: .openFileDescription)
        func lockKind(at byte: Int64) throws(LockingError) -> LockKind? {
            switch locker.probe(byte: byte, for: .exclusive) {
            case .success(let found): return found?.kind
            case .failure(let failure) where failure.errno == .noLocks || failure.errno == .notSupported:
                throw LockingError(.unsupported, "the file system of \(path) does not support locks (\(failure.errno)); nothing can hold a lock on it",
                                   path: path, cause: failure)
            case .failure(let failure): throw LockingError.from(failure, doing: "Failed to probe byte \(byte) of", path: path)
            }
        }
        var report = LockReport(path: path, heldPermissions: [], unsharedPermissions: [], transactionLock: nil,
                                holders: [], waiters: [], invisibleBytes: [])
        var lockedBytes: [Int64] = []
        for permission in ImagePermissions.each {
            if try lockKind(at: permission.heldByte) != nil {
                report.heldPermissions.insert(permission)
                lockedBytes.append(permission.heldByte)
            }
            if try lockKind(at: permission.unsharedByte) != nil {
                report.unsharedPermissions.insert(permission)
                lockedBytes.append(permission.unsharedByte)
            }
        }
        report.transactionLock = try lockKind(at: LockByte.transaction)
        if report.transactionLock != nil { lockedBytes.append(LockByte.transaction) }

        switch LockHolderScan.identity(of: descriptor) {
        case .success(let identity):
            // Without an open of ours to leave out, the probing descriptor, which holds no locks,
            // lets the scan ask the kernel whether anyone holds one.
            let findings = LockHolderScan(file: identity, excluding: excluding ?? descriptor).scan()
            report.holders = findings.holders
            report.waiters = findings.waiters
        case .failure(let failure):
            throw LockingError.from(failure, doing: "Failed to stat", path: path)
        }
        report.invisibleBytes = lockedBytes.filter { byte in !report.holders.contains { $0.covers(byte: byte) } }
        return report
    }
}
