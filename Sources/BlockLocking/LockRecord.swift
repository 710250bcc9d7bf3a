// LockRecord: one lock line as the kernel prints it in /proc/locks and /proc/PID/fdinfo/FD
// (fs/locks.c, lock_get_status), parsed. Pure: no I/O, so it is tested on literal lines.
//
//   1: OFDLCK  ADVISORY  READ  -1 fe:01:1234 100 101       a lock held (OFD: pid is always -1)
//   2: POSIX  ADVISORY  WRITE 4567 fe:01:1234 0 EOF        classic POSIX lock, real pid
//   2: -> OFDLCK ADVISORY  WRITE -1 fe:01:1234 300 300     a waiter blocked behind lock 2
// The device is major:minor in hex, the inode decimal, the range inclusive.

/// The file a lock is on, as /proc identifies it.
public struct FileIdentity: Sendable, Hashable {
    /// The major number of the file system's device, as /proc/locks prints it (hex there).
    public var deviceMajor: UInt32
    /// The minor number of the file system's device.
    public var deviceMinor: UInt32
    /// The file's inode on that device.
    public var inode: UInt64

    /// Usually made by `LockHolderScan.identity(of:)`, which takes the device from the mount as the
    /// kernel prints it; by hand for tests of parsed lines.
    public init(deviceMajor: UInt32, deviceMinor: UInt32, inode: UInt64) {
        self.deviceMajor = deviceMajor
        self.deviceMinor = deviceMinor
        self.inode = inode
    }
}

/// One lock line of /proc/locks or /proc/PID/fdinfo/FD, parsed: the raw facts `LockHolder`
/// turns into words. Pure, so the parser is tested on literal lines.
public struct LockRecord: Sendable, Hashable {
    /// OFDLCK, POSIX, FLOCK, LEASE, …
    public var family: String
    /// READ is shared, WRITE exclusive.
    public var kind: LockKind
    /// A blocked request ("->") rather than a granted lock.
    public var isWaiting: Bool
    /// The pid the kernel prints: -1 for OFD locks.
    public var reportedPID: Int32
    /// The file the lock is on, to match lines of /proc/locks to one image.
    public var file: FileIdentity
    /// The first byte locked; with `lastByte`, which of the image's lock bytes the lock covers.
    public var firstByte: Int64
    /// The last byte, inclusive; nil for "to end of file".
    public var lastByte: Int64?

    /// Whether this lock is on `byte`: how a lock is matched to its meaning (LockByte).
    public func covers(byte: Int64) -> Bool {
        byte >= firstByte && (lastByte.map { byte <= $0 } ?? true)
    }

    /// Parses the text after "lock:\t" in fdinfo, or a whole /proc/locks line.
    public init?(line: Substring) {
        var fields = line.byteFields[...]
        guard let id = fields.popFirst(), id.hasSuffix(":") else { return nil }
        isWaiting = fields.first == "->"
        if isWaiting { fields.removeFirst() }
        guard fields.count >= 7 else { return nil }
        let columns = Array(fields.prefix(7))
        family = String(columns[0])
        switch columns[2] {
        case "READ": kind = .shared
        case "WRITE": kind = .exclusive
        default: return nil
        }
        guard let pid = Int32(columns[3]) else { return nil }
        reportedPID = pid
        let device = columns[4].splitBytes { $0 == UInt8(ascii: ":") }
        guard device.count == 3, let major = UInt32(device[0], radix: 16), let minor = UInt32(device[1], radix: 16),
              let inode = UInt64(device[2]) else { return nil }
        file = FileIdentity(deviceMajor: major, deviceMinor: minor, inode: inode)
        guard let first = Int64(columns[5]), first >= 0 else { return nil }
        firstByte = first
        if columns[6] == "EOF" {
            lastByte = nil
        } else {
            guard let last = Int64(columns[6]), last >= first else { return nil }
            lastByte = last
        }
    }

    /// The granted lock's sameness for matching a /proc/locks line against fdinfo lines.
    var matchKey: MatchKey { MatchKey(family: family, kind: kind, firstByte: firstByte, lastByte: lastByte) }

    struct MatchKey: Hashable {
        var family: String
        var kind: LockKind
        var firstByte: Int64
        var lastByte: Int64?
    }
}

extension LockRecord {
    /// The lock records of `file` in a /proc/locks or fdinfo text; fdinfo lines start "lock:".
    static func records(in text: String, on file: FileIdentity) -> [LockRecord] {
        Substring(text).byteLines.compactMap { line in
            let body = line.hasPrefix("lock:") ? line.dropFirst(5) : line
            guard let record = LockRecord(line: body), record.file == file else { return nil }
            return record
        }
    }
}
