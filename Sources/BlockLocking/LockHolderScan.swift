// LockHolderScan: who holds locks on a file, found through /proc.
//
// Problem: OFD locks report l_pid = -1 to F_OFD_GETLK and in /proc/locks, so "who holds it?"
// has no direct answer. But /proc/PID/fdinfo/FD lists the locks owned through that descriptor
// ("lock:" lines), with the file's device and inode.
// Design: /proc/locks gives every lock on the inode system-wide, readable by anyone; the fdinfo
// files of every process attribute them to pids and programs. What is left unattributed (a
// process whose /proc entries this user may not read) is reported as an unknown holder rather
// than dropped. Locks held from other hosts (NFS) are not in this host's /proc at all; the
// caller's F_OFD_GETLK probes see them (see LockReport.swift).
// The scan reads a file per descriptor of every process: it runs on error paths and for
// `blk locks`, never on the lock fast path.
import CLinuxLocking
import Glibc
import Posix
import SystemPackage

/// Answers "who holds this file's locks?", which OFD locks cannot: they report pid -1, so the
/// holders are found by matching /proc/locks against every process's /proc/PID/fdinfo.
public struct LockHolderScan: Sendable {
    /// The file as /proc/locks names it: device and inode, never a path, which holders may spell
    /// differently.
    public var file: FileIdentity
    /// Our own descriptor whose locks are not "held by someone else". The kernel's conflict check
    /// through it also settles what /proc/locks, read while it changes, cannot: whether anyone
    /// else holds a lock at all. A descriptor holding no locks serves for that alone.
    public var excluding: FileDescriptor?

    /// A scan of `file`, leaving out the locks of `excluding`: an open that asks who is in its way
    /// must not find itself.
    public init(file: FileIdentity, excluding: FileDescriptor? = nil) {
        self.file = file
        self.excluding = excluding
    }

    /// The identity of the file behind a descriptor, as /proc/locks prints it. The kernel prints
    /// the device of the file system's superblock, which st_dev is not on btrfs (each subvolume
    /// has a device of its own), so the device comes from the descriptor's mount in
    /// /proc/self/mountinfo, and from fstat(2) only when that cannot be read.
    public static func identity(of descriptor: FileDescriptor) -> Result<FileIdentity, SystemCallError> {
        identity(of: descriptor, on: MountInfo.of(descriptor))
    }

    /// The same, for a descriptor whose mount is already known (ImageLocks reads it at open).
    public static func identity(of descriptor: FileDescriptor, on mount: MountInfo?) -> Result<FileIdentity, SystemCallError> {
        var status = stat()
        return valueOrErrno("fstat", { fstat(descriptor.rawValue, &status) }).map { _ in
            let (major, minor) = mount.map { ($0.deviceMajor, $0.deviceMinor) }
                ?? (blk_dev_major(UInt64(status.st_dev)), blk_dev_minor(UInt64(status.st_dev)))
            return FileIdentity(deviceMajor: major, deviceMinor: minor, inode: UInt64(status.st_ino))
        }
    }

    /// The result of one scan: holders of granted locks, and how many requests wait.
    public struct Findings: Sendable, Hashable {
        /// Processes with granted locks on the file, this process first; locks no process could be
        /// found for are one holder with no pid.
        public var holders: [LockHolder]
        /// Requests blocked in the kernel: a queue behind a holder, which `blk locks` shows.
        public var waiters: [LockRecord]
    }

    /// Reads /proc now: what it finds may change the moment after, so it serves messages and
    /// reports, never decisions.
    public func scan() -> Findings {
        let ownPID = getpid()
        // The kernel prints /proc/locks a page per read(2), each page from the lock list as it
        // then is, so on a busy host a change between pages prints lines twice or not at all: a
        // line printed twice looks like a holder no process owns, a line left out hides one. So
        // the list is read until two reads agree about this file, with this process's descriptors
        // read between them, which also catches a lock a thread here took meanwhile. Churn that
        // keeps time with the reads can repeat a fault in both, so the kernel's conflict check
        // through `excluding`, which skips only that open's locks, has the last word where it can.
        var everything = currentRecords()
        var own = descriptorRecords(of: ownPID)
        for _ in 1..<Self.readsToAgree {
            let again = currentRecords()
            if again == everything { break }
            everything = again
            own = descriptorRecords(of: ownPID)
        }
        let granted = everything.filter { !$0.isWaiting }
        let waiters = everything.filter(\.isWaiting)
        let othersHold = anotherOpenHolds(from: 0, through: nil)
        guard othersHold != false, !granted.isEmpty || othersHold == true else { return Findings(holders: [], waiters: waiters) }

        var unattributed: [LockRecord.MatchKey: Int] = [:]
        for record in granted { unattributed[record.matchKey, default: 0] += 1 }
        var holders: [LockHolder] = []
        var denied = 0
        func attribute(_ pid: Int32, _ descriptors: ProcessDescriptors) {
            guard case .readable(let byDescriptor) = descriptors else {
                if case .denied = descriptors { denied += 1 }
                return
            }
            var records: [LockRecord] = []
            for (name, found) in byDescriptor {
                for record in found { unattributed[record.matchKey]? -= 1 }
                if pid == ownPID, let excluding, name == String(excluding.rawValue) { continue }
                records += found
            }
            if !records.isEmpty {
                holders.append(LockHolder(pid: pid, program: Self.programName(of: pid), locks: records.sorted(by: byPosition)))
            }
        }
        // This process first: when its own locks are all there are (an open that asks who else
        // holds the image, and nobody does), no other process's descriptors need reading.
        attribute(ownPID, own)
        if unattributed.values.contains(where: { $0 > 0 }) || (othersHold == true && holders.isEmpty) {
            for pid in processIDs() where pid != ownPID { attribute(pid, descriptorRecords(of: pid)) }
        }

        // Classic POSIX locks carry their real pid even when fdinfo could not be read.
        var unknown: [LockRecord] = []
        for record in granted where (unattributed[record.matchKey] ?? 0) > 0 {
            unattributed[record.matchKey]! -= 1
            if record.reportedPID > 0 {
                holders.append(LockHolder(pid: record.reportedPID, program: Self.programName(of: record.reportedPID), locks: [record]))
            } else if anotherOpenHolds(from: record.firstByte, through: record.lastByte) != false {
                unknown.append(record)
            }
        }
        if !unknown.isEmpty {
            let note = denied > 0
                ? "its /proc entries are not readable by this user; \(denied) processes could not be inspected"
                : "it exited while being looked for"
            holders.append(LockHolder(pid: nil, program: nil, locks: unknown.sorted(by: byPosition), visibilityNote: note))
        }
        holders.sort { ($0.pid ?? .max) < ($1.pid ?? .max) }
        return Findings(holders: holders, waiters: waiters)
    }

    /// How many times /proc/locks is read at most for two reads that agree: lock changes on this
    /// very file (a queue moving) can keep them apart, and then the last read is taken.
    static let readsToAgree = 4

    /// Whether an open other than `excluding` holds a lock on any byte from `first` through `last`
    /// (nil: to the end of the file), as the kernel's conflict check through `excluding` sees it;
    /// nil without `excluding` or when the check fails. Lock lines keep last ≥ first ≥ 0.
    private func anotherOpenHolds(from first: Int64, through last: Int64?) -> Bool? {
        guard let excluding else { return nil }
        let probed = ByteLocker(descriptor: excluding, flavor: .openFileDescription).probe(from: first, through: last, for: .exclusive)
        return try? probed.get() != nil
    }

    /// The lock lines of this file in /proc/locks, read now.
    private func currentRecords() -> [LockRecord] {
        LockRecord.records(in: readProcFile("/proc/locks") ?? "", on: file)
    }

    /// One process's granted locks on this file, by descriptor; or why they cannot be known.
    private enum ProcessDescriptors {
        case readable([(name: String, records: [LockRecord])])
        /// Not this user's to read: its locks stay unexplained.
        case denied
        /// Exited since /proc was listed: its locks went with it.
        case gone
    }

    private func descriptorRecords(of pid: Int32) -> ProcessDescriptors {
        let names: [String]
        switch directoryEntries("/proc/\(pid)/fdinfo") {
        case .success(let found): names = found
        case .failure(let errno): return errno == .permissionDenied || errno == .notPermitted ? .denied : .gone
        }
        var byDescriptor: [(name: String, records: [LockRecord])] = []
        for name in names {
            guard let text = readProcFile("/proc/\(pid)/fdinfo/\(name)") else { continue }
            let found = LockRecord.records(in: text, on: file).filter { !$0.isWaiting }
            if !found.isEmpty { byDescriptor.append((name, found)) }
        }
        return .readable(byDescriptor)
    }

    /// Only the blocked requests on the file, from /proc/locks alone: cheap enough to poll.
    public func waiters() -> [LockRecord] {
        LockRecord.records(in: readProcFile("/proc/locks") ?? "", on: file).filter(\.isWaiting)
    }

    private func byPosition(_ first: LockRecord, _ second: LockRecord) -> Bool {
        (first.firstByte, first.kind.rawValue) < (second.firstByte, second.kind.rawValue)
    }

    private func processIDs() -> [Int32] {
        (listDirectory("/proc") ?? []).compactMap { Int32($0) }
    }

    /// /proc/PID/comm as the process set it: control characters included, so text output escapes it.
    public static func programName(of pid: Int32) -> String? {
        readProcFile("/proc/\(pid)/comm").map { String($0.prefix { $0 != "\n" }) }
    }
}

/// Reads a small /proc file whole; nil when it cannot be opened (gone, or not ours to read).
func readProcFile(_ path: String) -> String? {
    guard let descriptor = try? FileDescriptor.open(path, .readOnly, options: [.closeOnExec]) else { return nil }
    defer { try? descriptor.close() }
    guard let bytes = try? descriptor.readToEnd(expectedCount: 4096).get() else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

/// The names in a directory, without "." and ".."; nil when it cannot be opened.
func listDirectory(_ path: String) -> [String]? {
    try? directoryEntries(path).get()
}

/// The names in a directory, without "." and ".."; or why it could not be opened.
func directoryEntries(_ path: String) -> Result<[String], Errno> {
    guard let directory = opendir(path) else { return .failure(Errno(rawValue: errno)) }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return .success(names)
}
