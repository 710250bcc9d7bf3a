// ImageCheckResult: what a format's check found (QEMU's BdrvCheckResult), with the findings
// themselves: QEMU's drivers print them as they go, here the caller prints them after. Every
// finding is counted; only the first few thousand of each kind are kept to be shown, since a
// hostile image can make millions (a refcount table that claims every cluster of a sparse
// 32 GiB file leaks 64 million), and memory must follow the metadata, not what it claims.
/// What a check found and what a repair fixed, for the caller to print as `qemu-img check` does
/// and to turn into its exit code.
public struct ImageCheckResult: Sendable {
    /// How many findings of each kind are kept to be shown.
    public static let listedFindings = 1000

    /// Findings of one kind: all counted, the first `listedFindings` kept.
    public struct Findings<Finding: Sendable>: Sendable {
        /// Every finding of the kind, listed or not: the figure qemu-img prints.
        public private(set) var count = 0
        /// The findings kept to be shown, in the order they were found.
        public private(set) var listed: [Finding] = []

        /// No findings yet: a check appends as it goes.
        public init() {}

        /// Whether the check found none of this kind.
        public var isEmpty: Bool { count == 0 }
        /// Found but not kept.
        public var unlisted: Int { count - listed.count }

        /// Whether findings from now on are only counted.
        public var isFull: Bool { listed.count >= ImageCheckResult.listedFindings }

        /// Counts a finding, and keeps it while the list has room: a finding past that is not
        /// even made.
        public mutating func append(_ finding: @autoclosure () -> Finding) {
            count += 1
            if !isFull { listed.append(finding()) }
        }

        /// Counts `more` findings once the list is full, without making each.
        public mutating func countUnlisted(_ more: Int) {
            count += more
        }
    }

    /// A cluster whose stored refcount is not the number of references the check counted.
    public struct RefcountMismatch: Sendable {
        /// The cluster's index in the file (its offset divided by the cluster size).
        public var cluster: UInt64
        /// The refcount the image stores for it.
        public var refcount: UInt64
        /// The references to it the check counted.
        public var references: UInt64

        /// A mismatch as the check finds it.
        public init(cluster: UInt64, refcount: UInt64, references: UInt64) {
            self.cluster = cluster
            self.refcount = refcount
            self.references = references
        }
    }

    /// Stored refcount above the references: space wasted, no harm to data.
    public var leaks = Findings<RefcountMismatch>()
    /// Stored refcount below the references: a cluster in use could be handed out again.
    public var refcountErrors = Findings<RefcountMismatch>()
    /// Flags in the metadata that disagree with the refcounts (qcow2's OFLAG_COPIED), in the
    /// format's words: a full repair sets them right.
    public var flagErrors = Findings<String>()
    /// Corruption no repair fixes (references past the end of the file, unaligned, invalid
    /// tables), in the format's words.
    public var otherErrors = Findings<String>()
    /// Leaks a repair fixed: qemu-img reports them apart from what remains.
    public var leaksFixed = 0
    /// Corruptions a repair fixed.
    public var corruptionsFixed = 0
    /// Guest clusters of the virtual size.
    public var totalClusters: UInt64 = 0
    /// Guest clusters the active tables allocate, and of those, how many do not follow the one
    /// before them in the file (fragmented) and how many are compressed: qemu-img's figures.
    public var allocatedClusters: UInt64 = 0
    /// Allocated clusters not right after the one before them in the file.
    public var fragmentedClusters: UInt64 = 0
    /// Allocated clusters stored compressed.
    public var compressedClusters: UInt64 = 0
    /// The end of the last cluster in use, which the file may stop short of.
    public var imageEndOffset: UInt64 = 0

    /// A result with nothing found: the format's check fills it in.
    public init() {}

    /// The errors that make `qemu-img check` exit 2: everything but leaks.
    public var corruptionCount: Int { refcountErrors.count + flagErrors.count + otherErrors.count }
}
