// Qcow2CheckResult: what `blk check` found (Qcow2Check.swift). Every finding is counted; only the
// first few thousand of each kind are kept to be shown, since a hostile image can make millions
// (a refcount table that claims every cluster of a sparse 32 GiB file leaks 64 million), and
// memory must follow the metadata, not what the metadata claims.
public struct Qcow2CheckResult: Sendable {
    /// How many findings of each kind are kept to be shown.
    public static let listedFindings = 1000

    /// Findings of one kind: all counted, the first `listedFindings` kept.
    public struct Findings<Finding: Sendable>: Sendable {
        public private(set) var count = 0
        public private(set) var listed: [Finding] = []

        public var isEmpty: Bool { count == 0 }
        /// Found but not kept.
        public var unlisted: Int { count - listed.count }

        /// Whether findings from now on are only counted.
        var isFull: Bool { listed.count >= Qcow2CheckResult.listedFindings }

        mutating func append(_ finding: @autoclosure () -> Finding) {
            count += 1
            if !isFull { listed.append(finding()) }
        }

        /// Counts `more` findings once the list is full, without making each.
        mutating func countUnlisted(_ more: Int) {
            count += more
        }
    }

    public struct Mismatch: Sendable {
        public var cluster: UInt64
        public var refcount: UInt64
        public var references: UInt64
    }

    /// An active L1 or L2 entry whose COPIED bit disagrees with its cluster's refcount.
    public struct CopiedFlagError: Sendable {
        public var l2TableOffset: UInt64? // nil: an L1 entry
        public var index: Int
        public var entry: UInt64
        public var refcount: UInt64

        public var message: String {
            let hex = String(entry, radix: 16)
            if l2TableOffset == nil { return "OFLAG_COPIED L2 cluster: l1_index=\(index) l1_entry=\(hex) refcount=\(refcount)" }
            if entry & Qcow2Driver.compressedBit != 0 { return "OFLAG_COPIED compressed cluster: l2_entry=\(hex)" }
            return "OFLAG_COPIED data cluster: l2_entry=\(hex) refcount=\(refcount)"
        }
    }

    /// A reference or table the check cannot repair, put into words only when shown: a hostile
    /// image makes thousands, most never shown.
    public enum Problem: Sendable {
        case pastTheEnd(what: String, offset: UInt64)
        case invalidL1Table(name: String, offset: UInt64)
        case invalidL2Table(offset: UInt64, l1Table: String, index: Int)
        case unalignedCluster(offset: UInt64)
        case invalidRefcountBlock(index: Int, offset: UInt64)
        /// A refcount block the refcount table names more than once, or names as something else too.
        case refcountBlockNamedAgain(index: Int, references: UInt64)

        public var message: String {
            func hex(_ offset: UInt64) -> String { "0x" + String(offset, radix: 16) }
            switch self {
            case .pastTheEnd(let what, let offset): return "ERROR \(what) at offset \(hex(offset)) is past the end of the file"
            case .invalidL1Table(let name, let offset): return "ERROR \(name) at offset \(hex(offset)) is invalid"
            case .invalidL2Table(let offset, let l1Table, let index):
                return "ERROR L2 table at offset \(hex(offset)) (\(l1Table) entry \(index)) is invalid"
            case .unalignedCluster(let offset): return "ERROR offset=\(hex(offset)): Cluster is not properly aligned; L2 entry corrupted"
            case .invalidRefcountBlock(let index, let offset):
                return "ERROR refcount block \(index) at offset \(hex(offset)) is unaligned or past the end of the file"
            case .refcountBlockNamedAgain(let index, let references): return "ERROR refcount block \(index) refcount=\(references)"
            }
        }
    }

    public var leaks = Findings<Mismatch>()
    public var refcountErrors = Findings<Mismatch>()
    public var copiedFlagErrors = Findings<CopiedFlagError>()
    /// References the check cannot repair: past the end of the file, unaligned, invalid tables,
    /// a refcount block named twice.
    public var otherErrors = Findings<Problem>()
    public var leaksFixed = 0
    public var corruptionsFixed = 0
    public var totalClusters: UInt64 = 0
    /// Guest clusters the active tables allocate, and of those, how many do not follow the one
    /// before them in the file (fragmented) and how many are compressed — qemu-img's figures.
    public var allocatedClusters: UInt64 = 0
    public var fragmentedClusters: UInt64 = 0
    public var compressedClusters: UInt64 = 0
    public var imageEndOffset: UInt64 = 0

    public var corruptionCount: Int { refcountErrors.count + copiedFlagErrors.count + otherErrors.count }
}
