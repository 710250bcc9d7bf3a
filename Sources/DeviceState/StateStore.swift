// StateStore: the device-state store of one image — named blobs in its virtual disk, committed
// atomically, checksummed, optionally encrypted (docs/state.md). This file: opening in a role,
// transactions under the transaction lock, and QEMU's migration hand-over. Commits are in
// StateStore+Commit.swift, reads in StateStore+Read.swift.
//
// Roles:
//   writer    the image open read-write and active, for as long as the store is (a running
//             device); only one process can be one (QEMU's write permission, not shared);
//   reader    nothing held between transactions: each opens the image afresh, read-only with
//             force-share, so it runs beside a writer and never sees metadata cached before the
//             writer's last commit;
//   inactive  a migration destination: the image open without permission locks; reads as a
//             reader until `activate` makes it the writer.
//
// The transaction lock is taken through a descriptor of the store's own (OFD locks belong to an
// open file description), so a one-shot command can hold it across its whole open–commit–close
// and a second one waits for it instead of failing on the permission locks.
import BlockLayer
import BlockLocking
import Synchronization

/// A device's persistent state (a virtual TPM's) kept in its image, so it travels with the disk
/// over shared storage and survives crashes: every commit is atomic and every read verified.
public final class StateStore: Sendable {
    /// How this store uses the image, which decides what it holds between transactions (the roles
    /// in the chart at the top of this file).
    public enum Role: Sendable, Hashable {
        /// The running device: the image open read-write and active for as long as the store is.
        case writer
        /// A tool that looks: nothing held between reads, so it runs beside a writer.
        case reader
        /// A migration destination: reads now, becomes the writer on `activate()`.
        case inactive
    }

    /// How the store opens its image, as `OpenOptions` would for a `BlockImage`, plus how long a
    /// transaction waits for the lock.
    public struct Options: Sendable {
        /// The image format; nil probes it.
        public var format: String?
        /// QEMU's locking option for every open the store makes.
        public var locking: LockingMode
        /// The cache mode of the writer's image; commits flush whatever it is, except `unsafe`.
        public var cache: CacheMode
        /// How long a transaction waits for the transaction lock before `.block`/timeout (75).
        public var timeout: Duration
        /// Faults injected under the format node of every image the store opens (tests).
        public var faults: [FaultRule]
        /// A journal of every write and flush of the store's read-write opens (tests).
        public var writeJournalPath: String?
        /// The image's lease on shared storage for the writer (readers force-share and take none).
        public var lease: LeasePolicy

        /// Defaults for a device's own store: probed format, QEMU's locking, 10 s to wait for a
        /// commit.
        public init(format: String? = nil, locking: LockingMode = .auto, cache: CacheMode = .writeback,
                    timeout: Duration = .seconds(10), faults: [FaultRule] = [], writeJournalPath: String? = nil,
                    lease: LeasePolicy = .configured) {
            self.lease = lease
            self.format = format
            self.locking = locking
            self.cache = cache
            self.timeout = timeout
            self.faults = faults
            self.writeJournalPath = writeJournalPath
        }

        func openOptions(writable: Bool, inactive: Bool = false) -> OpenOptions {
            OpenOptions(format: format, writable: writable, forceShare: !writable, locking: locking, cache: cache,
                        inactive: inactive, faults: faults, writeJournalPath: writeJournalPath, lease: lease)
        }
    }

    /// The image, as every open of it and every message names it.
    public let path: String
    /// The options every open of the image uses.
    public let options: Options
    let lockFile: LockedImageFile

    struct State {
        var role: Role
        /// The writer's image (active), or the destination's (inactive).
        var image: BlockImage?
        /// The writer's view: valid while it is active, since no one else can commit.
        var view: StoreView?
        var credential: StateCredential?
        /// Keys opened for a key header, kept so stretching a passphrase happens once.
        var keys: (header: KeyHeader, storeID: [UInt8], keys: StoreKeys?)?
        var closed = false
    }

    let state: Mutex<State>

    private init(path: String, options: Options, lockFile: LockedImageFile, state: State) {
        self.path = path
        self.options = options
        self.lockFile = lockFile
        self.state = Mutex(state)
    }

    /// Opens the store of the image at `path` in `role`, with `credential` for encrypted state.
    /// A writer waits (up to the timeout) for commits in flight to end before it opens the image.
    public static func open(_ path: String, role: Role, credential: StateCredential? = nil,
                            options: Options = Options()) throws(StateError) -> StateStore {
        let store = StateStore(path: path, options: options, lockFile: try lockFile(path, writable: role != .reader, options),
                               state: State(role: role, credential: credential))
        switch role {
        case .reader:
            break
        case .inactive:
            let image = try blockCall { () throws(BlockError) in
                try BlockImage.open(path, options: options.openOptions(writable: true, inactive: true))
            }
            store.state.withLock { $0.image = image }
        case .writer:
            try store.holding(.exclusive) { () throws(StateError) in try store.openWriterImage() }
        }
        return store
    }

    /// Runs `body` with a writer that holds the exclusive transaction lock from before it opens
    /// the image until after it closes it: one-shot commands (`blk state put`), which then
    /// queue behind each other instead of failing on the permission locks.
    @discardableResult
    public static func withWriter<Result>(_ path: String, credential: StateCredential? = nil, options: Options = Options(),
                                          _ body: (StateStore) throws(StateError) -> Result) throws(StateError) -> Result {
        let store = StateStore(path: path, options: options, lockFile: try lockFile(path, writable: true, options),
                               state: State(role: .writer, credential: credential))
        return try store.holding(.exclusive) { () throws(StateError) in
            try store.openWriterImage()
            let result = try body(store)
            try store.close()
            return result
        }
    }

    /// The store's own descriptor for the transaction lock (writable for the exclusive kind).
    private static func lockFile(_ path: String, writable: Bool, _ options: Options) throws(StateError) -> LockedImageFile {
        do throws(LockingError) {
            return try LockedImageFile(path: path, writable: writable, mode: options.locking)
        } catch {
            throw StateError(error)
        }
    }

    private func openWriterImage() throws(StateError) {
        let image = try blockCall { () throws(BlockError) in
            try BlockImage.open(path, options: options.openOptions(writable: true))
        }
        state.withLock {
            $0.image = image
            $0.view = nil
        }
    }

    /// The role now: an inactive store becomes the writer when activated, a writer inactive when it
    /// hands over.
    public var role: Role { state.withLock { $0.role } }

    /// Warnings of the image open (a probed raw image, locking fallbacks).
    public var warnings: [String] {
        (lockFile.locks.decision.warnings + (state.withLock { $0.image?.warnings } ?? [])).uniqued()
    }

    /// Flushes and closes the image; the store can do nothing more.
    public func close() throws(StateError) {
        let image = state.withLock { state -> BlockImage? in
            state.closed = true
            defer { state.image = nil }
            return state.image
        }
        if let image { try blockCall { () throws(BlockError) in try image.close() } }
    }

    // MARK: the migration hand-over

    /// Gives the image up for a migration destination: flush, drop the permission locks. Commits
    /// are refused until `activate`.
    public func inactivate() throws(StateError) {
        try state.withLock { (state) throws(StateError) in
            guard state.role == .writer, let image = state.image else { return }
            try blockCall { () throws(BlockError) in try image.inactivate() }
            state.role = .inactive
            state.view = nil
        }
    }

    /// Takes the image over as its writer: reopens it (nothing the source wrote is seen through a
    /// stale cache), then takes the permission locks — QEMU's words, and still inactive, if the
    /// source has not let go.
    public func activate() throws(StateError) {
        try state.withLock { (state) throws(StateError) in
            guard state.role == .inactive else { return }
            let image = try blockCall { () throws(BlockError) in
                // A source that inactivated between this open and its activation wrote its last
                // metadata after the open read it (activation says `stale`): it holds nothing
                // now, so the next open reads what it left.
                var attempts = 0
                while true {
                    let fresh = try BlockImage.open(path, options: options.openOptions(writable: true, inactive: true))
                    do throws(BlockError) {
                        try fresh.activate()
                        return fresh
                    } catch where error.code == .stale && attempts < 2 {
                        attempts += 1
                    }
                }
            }
            state.image = image
            state.view = nil
            state.role = .writer
        }
    }

    // MARK: transactions

    private var deadline: LockDeadline { .after(options.timeout) }

    /// Runs `body` holding the transaction lock of `kind` (counted: nests within itself).
    func holding<Result>(_ kind: LockKind, _ body: () throws(StateError) -> Result) throws(StateError) -> Result {
        let lock = lockFile.locks.transaction
        do throws(LockingError) {
            try lock.acquire(kind, deadline: deadline)
        } catch {
            throw StateError(error)
        }
        defer { try? lock.release(kind) }
        return try body()
    }

    /// The same for async callers: the wait and `body` run on threads of BlockingThreadPool, so
    /// no task thread blocks. Cancelling the task ends the wait at once; once the lock is taken,
    /// `body` runs to the end (a commit is never torn).
    func holding<Result: Sendable>(_ kind: LockKind, _ body: @escaping @Sendable () throws(StateError) -> Result) async throws(StateError) -> Result {
        let lock = lockFile.locks.transaction
        do throws(LockingError) {
            try await lock.acquire(kind, deadline: deadline)
        } catch {
            throw StateError(error)
        }
        return try await BlockingThreadPool.shared.run { () throws(StateError) -> Result in
            defer { try? lock.release(kind) }
            return try body()
        }
    }

    /// A read transaction: the shared lock, then the writer's own view, or a fresh image's.
    func reading<Result>(_ body: (StoreView, BlockImage, inout State) throws(StateError) -> Result) throws(StateError) -> Result {
        try holding(.shared) { () throws(StateError) in
            try state.withLock { (state) throws(StateError) -> Result in
                guard !state.closed else { throw StateError(.invalidRequest, "the state store of '\(path)' is closed") }
                if state.role == .writer, let image = state.image {
                    let view: StoreView
                    if let cached = state.view { view = cached } else { view = try StoreView.load(image, path: path) }
                    state.view = view
                    return try body(view, image, &state)
                }
                let image = try blockCall { () throws(BlockError) in
                    try BlockImage.open(path, options: options.openOptions(writable: false))
                }
                defer { try? image.close() }
                return try body(try StoreView.load(image, path: path), image, &state)
            }
        }
    }

    /// A commit: the exclusive lock and the writer's view, which `body` updates as it commits.
    /// `replacing`: a store that cannot be read is taken as empty (init --force).
    func committing<Result>(replacing: Bool = false,
                            _ body: (inout StoreView, BlockImage, inout State) throws(StateError) -> Result) throws(StateError) -> Result {
        try holding(.exclusive) { () throws(StateError) in
            try state.withLock { (state) throws(StateError) -> Result in
                guard !state.closed else { throw StateError(.invalidRequest, "the state store of '\(path)' is closed") }
                guard state.role == .writer, let image = state.image else {
                    throw StateError(.inactive, state.role == .inactive
                        ? "'\(path)' is inactive (migration hand-over): activate it before committing"
                        : "the state store of '\(path)' was opened for reading")
                }
                var view: StoreView
                if replacing {
                    view = (try? StoreView.load(image, path: path)) ?? StoreView()
                } else {
                    if let cached = state.view { view = cached } else { view = try StoreView.load(image, path: path) }
                }
                do throws(StateError) {
                    let result = try body(&view, image, &state)
                    state.view = view
                    return result
                } catch {
                    // What is on disk is the truth again: an update may have stopped halfway.
                    state.view = nil
                    throw error
                }
            }
        }
    }

    /// The keys that open `directory` with the store's credential (one of the three key errors
    /// otherwise), remembered for the next transaction.
    func keys(for directory: StateDirectory, superblock: Superblock, state: inout State) throws(StateError) -> StoreKeys? {
        if let cached = state.keys, cached.header == directory.keyHeader, cached.storeID == superblock.storeID {
            return cached.keys
        }
        let keys = try directory.keyHeader.open(storeID: superblock.storeID, with: state.credential)
        state.keys = (directory.keyHeader, superblock.storeID, keys)
        return keys
    }
}

extension Array where Element: Hashable {
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
