// BlockImage: an open image as its user holds it (QEMU's BlockBackend) — the top of the graph,
// with bounds and access checks on every request, reopen, and the migration hand-over.
//
// Hand-over (QEMU's inactivate / activate): the source flushes and gives up its permission
// locks; the destination, opened inactive (no permission locks, no writes), takes them. If the
// source still holds them, activation fails with QEMU's words and the destination stays inactive.
import BlockLocking
import Synchronization
import SystemPackage

/// An open image: what a program holds and sends its requests to. The place where requests are
/// checked against the size and access, and where reopen and the migration hand-over happen.
public final class BlockImage: Sendable {
    /// The path the image was opened by, as given: messages name the image the way the user did.
    public let path: String
    /// The top node of the image's graph (the format node), for code that walks the graph.
    public let root: BlockNode
    /// `root.driver`, one load from self: reached through `root` the compiler retains and
    /// releases the driver on every request, an atomic on a line every thread shares.
    private let rootDriver: any BlockDriver
    /// The format the image was opened as ("raw", "qcow2").
    public let format: String
    /// The format was guessed from the image's first bytes (no -f).
    public let formatWasProbed: Bool
    /// Lines to show the user (locking fallbacks, a write-enabled probed raw image).
    public let warnings: [String]
    /// The options the image was opened with, kept for reopening and for backing images.
    public let options: OpenOptions

    // Read on every request without a lock (see FileDriver); changed only by reopen and the
    // hand-over, under `accessChange`, with the write gate closed and no write under way.
    private let writableFlag: Atomic<Bool>
    private let activeFlag: Atomic<Bool>
    /// Open while the image is writable and active: writes (and flushes) pass it.
    private let writeGate: WriteGate
    /// Held by a reopen or hand-over from start to end: one at a time, and what waits for one.
    private let accessChange = Mutex(())
    /// The image file as it was when this open went inactive: if it changed by the time the
    /// open is activated, another process wrote it meanwhile.
    private let inactiveSince: Mutex<FileDriver.ChangeStamp?>

    /// Opens `path`: the file node, then the format node on top (built by the first of
    /// `formats` that matches, or the one `options.format` names) with the children it opens (a
    /// backing chain), then (unless inactive) the permission locks — all undone if any step fails.
    public static func open(_ path: String, options: OpenOptions = OpenOptions(),
                            formats: [any BlockFormat.Type]) throws(BlockError) -> BlockImage {
        if options.forceShare && options.writable {
            throw BlockError(.invalidRequest, "force-share=on can only be used with read-only images")
        }
        let graph = try openGraph(path, options: options, formats: formats, chain: [])
        var warnings = graph.warnings
        if graph.formatWasProbed && graph.format == "raw" && options.writable {
            warnings.append("Image format was not specified for '\(path)' and probing guessed raw; writes to block 0 that would make it look like another format are refused. Specify -f raw to remove the restriction.")
        }
        let image = BlockImage(path: path, root: graph.root, format: graph.format, probed: graph.formatWasProbed, warnings: warnings,
                               options: options, inactiveSince: graph.inactiveSince)
        if !options.inactive {
            do throws(BlockError) {
                try graph.root.setNeeds(options.userRequest, of: ObjectIdentifier(image))
            } catch {
                var refused = error
                refused.message = "Could not open '\(path)': " + error.message
                throw refused
            }
        }
        return image
    }

    /// The nodes of one image, before any parent has asked anything of them.
    struct OpenedGraph {
        var root: BlockNode
        var format: String
        var formatWasProbed: Bool
        var warnings: [String]
        /// The file as it was before the format read its metadata, for an inactive open.
        var inactiveSince: FileDriver.ChangeStamp?
    }

    /// The file node of `path` (with the test wrappers `options` asks for), the format node over
    /// it and what the format opens below it, refusing a file `chain` already holds. No lock is
    /// taken: the permissions come down from whoever holds the top node.
    static func openGraph(_ path: String, options: OpenOptions, formats: [any BlockFormat.Type],
                          chain: [FileIdentity]) throws(BlockError) -> OpenedGraph {
        let fileDriver = try FileDriver(path: path, writable: options.writable, locking: options.locking, cache: options.cache,
                                        lease: options.forceShare ? .none : options.lease) // -U reads beside writers
        var fileNode = BlockNode(driver: fileDriver)
        // A backing image is opened read-only, yet `blk commit` writes into one: its journal is
        // the one the open above asked backing images to record into.
        if let journalPath = options.writeJournalPath, options.writable || !chain.isEmpty {
            fileNode = BlockNode(driver: try WriteJournalDriver(file: fileNode, journalPath: journalPath), children: [(.file, fileNode)])
        }
        if !options.faults.isEmpty {
            fileNode = BlockNode(driver: FaultInjectionDriver(file: fileNode, rules: options.faults), children: [(.file, fileNode)])
        }
        let identity: FileIdentity
        // A loop is one file met twice by this process, which fstat's device and inode show
        // alike for every open, with no /proc reading (the mount is known only when locking).
        switch LockHolderScan.identity(of: fileDriver.locks.descriptor, on: nil) {
        case .success(let found): identity = found
        case .failure(let failure): throw BlockError.systemCall(failure, "Could not stat '\(path)'")
        }
        if chain.contains(identity) {
            throw BlockError(.corrupt, "Could not open '\(path)': the backing chain loops back to an image already in it")
        }

        let probed = options.format == nil
        let format: String
        if let chosen = options.format {
            format = chosen
        } else {
            format = FormatProbe.format(ofHeader: try readHeader(of: fileDriver), among: formats)
        }
        guard let driver = formats.first(where: { $0.formatName == format }) else {
            throw BlockError(.unsupported, format == "qcow2"
                ? "'\(path)' is a qcow2 image, and this program was built without the qcow2 driver"
                : "Unknown driver '\(format)'")
        }
        // Before the format reads its metadata: a write after this look is one it may have missed.
        let inactiveSince = options.inactive ? try fileDriver.changeStamp() : nil
        let context = FormatOpenContext(path: path, options: options, formats: formats, chain: chain + [identity])
        let root = try driver.open(file: fileNode, context: context)
        return OpenedGraph(root: root, format: format, formatWasProbed: probed, warnings: fileDriver.locks.decision.warnings,
                           inactiveSince: inactiveSince)
    }

    private init(path: String, root: BlockNode, format: String, probed: Bool, warnings: [String], options: OpenOptions,
                 inactiveSince: FileDriver.ChangeStamp?) {
        self.inactiveSince = Mutex(inactiveSince)
        self.path = path
        self.root = root
        rootDriver = root.driver
        self.format = format
        self.formatWasProbed = probed
        self.warnings = warnings
        self.options = options
        writableFlag = Atomic(options.writable)
        activeFlag = Atomic(!options.inactive)
        writeGate = WriteGate(open: options.writable && !options.inactive)
    }

    /// The first 512 bytes (fewer for a smaller image), where formats keep their magic.
    private static func readHeader(of driver: any BlockDriver) throws(BlockError) -> [UInt8] {
        let count = Int(min(512, try driver.length()))
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        defer { bytes.deallocate() }
        try driver.read(at: 0, into: bytes)
        return Array(bytes)
    }

    // MARK: I/O

    /// The virtual size: the bytes a guest sees.
    public func length() throws(BlockError) -> Int64 { try rootDriver.length() }

    /// Fills `buffer` with the guest's bytes at `byteOffset`; a range past the end is refused before
    /// any I/O.
    public func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try checkRange(byteOffset, Int64(buffer.count))
        try rootDriver.read(at: byteOffset, into: buffer)
    }

    /// Writes all of `buffer` at `byteOffset`, or throws: refused on a read-only or inactive image,
    /// and past the end.
    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try admittedWrite { () throws(BlockError) in
            try checkRange(byteOffset, Int64(buffer.count))
            if formatWasProbed && format == "raw" && byteOffset < 512 {
                try refuseProbeChange(at: byteOffset, buffer)
            }
            try rootDriver.write(at: byteOffset, from: buffer)
        }
    }

    /// Makes a range read as zeroes without sending zeroes, deallocating it where `mayUnmap` allows
    /// and the format can. With `onlyIfFast`, refused (`notSupportedByFormat`, nothing changed)
    /// where the format would have to write zeroes (BlockDriver.writeZeroesWithoutFallback).
    public func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool = false, onlyIfFast: Bool = false) throws(BlockError) {
        try admittedWrite { () throws(BlockError) in
            try checkRange(byteOffset, byteCount)
            if onlyIfFast {
                try rootDriver.writeZeroesWithoutFallback(at: byteOffset, byteCount: byteCount, mayUnmap: mayUnmap)
            } else {
                try rootDriver.writeZeroes(at: byteOffset, byteCount: byteCount, mayUnmap: mayUnmap)
            }
        }
    }

    /// Grows or shrinks the image to `byteCount` bytes; returns what the resize warns about
    /// without failing. Resizing needs QEMU's "resize" permission, which a guest-like open does
    /// not hold: it is taken for the resize (QEMU's words if another open refuses to share it)
    /// and given back after.
    @discardableResult
    public func resize(to byteCount: Int64) throws(BlockError) -> [String] {
        try admittedWrite { () throws(BlockError) in
            guard byteCount >= 0 else { throw BlockError(.invalidRequest, "Invalid image size specified") }
            try holdingResize { () throws(BlockError) in try root.driver.truncate(to: byteCount) }
        }
        return root.driver.takeWarnings()
    }

    /// What the run of bytes from `byteOffset` is (data, zeroes, unallocated; which node of the
    /// backing chain holds it, and where), at most `byteCount` of them (BlockStatus.swift).
    public func blockStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        try checkRange(byteOffset, byteCount)
        guard byteCount > 0 else { throw BlockError(.invalidRequest, "block status of an empty range (offset \(byteOffset))") }
        return try rootDriver.blockStatus(at: byteOffset, byteCount: byteCount)
    }

    /// Where the guest's bytes from `byteOffset` (a run of at most `byteCount`, at least 1) are
    /// stored as they read, if in a file range that keeps them while the image is open
    /// (HostExtent.swift): for a server to send them with sendfile; `file` nil: read them.
    public func hostExtent(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> HostExtent {
        try checkRange(byteOffset, byteCount)
        guard byteCount > 0 else { throw BlockError(.invalidRequest, "host extent of an empty range (offset \(byteOffset))") }
        return try rootDriver.hostExtent(at: byteOffset, byteCount: byteCount)
    }

    /// Whether the range is known to read as zeroes without reading it: its block status says so.
    public func readsAsZeroes(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> Bool {
        try checkRange(byteOffset, byteCount)
        return try rootDriver.readsAsZeroes(at: byteOffset, byteCount: byteCount)
    }

    /// Makes completed writes durable. Format drivers flush their file themselves, after their
    /// own metadata (see BlockDriver), so one call at the top reaches the storage once.
    public func flush() throws(BlockError) {
        guard writeGate.enter() else {
            // Read-only or inactive, or a reopen or hand-over is under way: after it, not beside
            // it, or this flush could return before that one has written back what it drained.
            return try accessChange.withLock { _ throws(BlockError) in try rootDriver.flush() }
        }
        defer { writeGate.leave() }
        try rootDriver.flush()
    }

    /// Runs `body` with its requests marked as part of `event`, for fault rules (BlockEvent.swift).
    public func during<Result, Failure: Error>(_ event: BlockEvent, _ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        try root.during(event, body)
    }

    /// Bytes the image occupies on disk.
    public func allocatedBytes() throws(BlockError) -> Int64? { try root.protocolNode.driver.allocatedBytes() }

    /// The transaction lock of the image file (interface.md §2).
    public var transactionLock: TransactionLock {
        // The protocol node is a FileDriver, which always has one.
        root.protocolNode.driver.transactionLock!
    }

    /// The descriptor the image file's locks are on, for reports of who else holds the image.
    public var lockDescriptor: FileDescriptor { fileDriver.locks.descriptor }

    /// The image's lease on shared storage, when leases are configured.
    public var lease: ImageLease? { fileDriver.locks.lease }

    /// Makes completed writes durable even under cache mode `unsafe`: for a copy written without
    /// the flushes that order a live image's metadata, made durable once at the end. It reaches
    /// the storage through the file driver, so under a lease a fence stops it too.
    public func flushIgnoringCacheMode() throws(BlockError) {
        try flush()
        try fileDriver.flushIgnoringCacheMode()
    }

    // MARK: format operations (BlockDriver.swift)

    /// Checks the image's metadata; with `repair`, fixes what the format may (the image must be
    /// writable).
    public func check(repair: RepairMode? = nil) throws(BlockError) -> ImageCheckResult {
        guard repair != nil else { return try rootDriver.check(repair: nil) }
        var result = ImageCheckResult()
        try admittedWrite { () throws(BlockError) in result = try rootDriver.check(repair: repair) }
        return result
    }

    /// What the format says about the image beyond its size.
    public func formatInfo() throws(BlockError) -> FormatSpecificInfo { try rootDriver.formatInfo() }

    /// The internal snapshots, in table order.
    public func snapshots() throws(BlockError) -> [SnapshotInfo] { try rootDriver.snapshots() }

    /// Takes an internal snapshot (the image must be writable).
    public func createSnapshot(name: String, dateSeconds: UInt32, dateNanoseconds: UInt32) throws(BlockError) -> SnapshotInfo {
        var created: SnapshotInfo?
        try drainedWrite { () throws(BlockError) in
            created = try rootDriver.createSnapshot(name: name, dateSeconds: dateSeconds, dateNanoseconds: dateNanoseconds)
        }
        return created.unsafelyUnwrapped
    }

    /// Makes a snapshot the image's content and size. The size may change, so QEMU's "resize"
    /// permission is taken for it, as `resize` takes it.
    public func applySnapshot(id: String) throws(BlockError) {
        try drainedWrite { () throws(BlockError) in
            try holdingResize { () throws(BlockError) in try rootDriver.applySnapshot(id: id) }
        }
    }

    /// Deletes an internal snapshot (the image must be writable).
    public func deleteSnapshot(id: String) throws(BlockError) {
        try drainedWrite { () throws(BlockError) in try rootDriver.deleteSnapshot(id: id) }
    }

    /// Changes the format's options in place (`qemu-img amend`), holding resize as well for the
    /// duration (a `size` option resizes, as `resize(to:)` does). This open writes no guest data
    /// afterwards: close it, and open the image again to use it. Returns what a resize warned
    /// about without failing.
    @discardableResult
    public func amend(_ options: FormatOptions, force: Bool = false, progress: (Double) -> Void = { _ in }) throws(BlockError) -> [String] {
        try admittedWrite { () throws(BlockError) in
            try holdingResize { () throws(BlockError) in try rootDriver.amend(options, force: force, progress: progress) }
        }
        return root.driver.takeWarnings()
    }

    /// Runs `body` holding QEMU's "resize" permission, which a guest-like open does not hold: taken
    /// for what may change the size (QEMU's words if another open refuses to share it) and given
    /// back after.
    private func holdingResize(_ body: () throws(BlockError) -> Void) throws(BlockError) {
        let usual = currentRequest
        var request = usual
        request.held.insert(.resize)
        try root.setNeeds(request, of: ObjectIdentifier(self))
        defer { try? root.setNeeds(usual, of: ObjectIdentifier(self)) }
        try body()
    }

    /// The persistent dirty bitmaps a copy would carry; nil for a format that stores none.
    public func persistentBitmaps() throws(BlockError) -> [PersistentBitmap]? { try rootDriver.persistentBitmaps() }

    /// Changes one persistent dirty bitmap (`qemu-img bitmap`), durably.
    public func changeBitmap(_ name: String, _ change: BitmapChange) throws(BlockError) {
        try admittedWrite { () throws(BlockError) in try rootDriver.changeBitmap(name, change) }
    }

    /// The byte ranges a persistent dirty bitmap marks.
    public func dirtyRanges(ofBitmap name: String) throws(BlockError) -> [Range<Int64>] { try rootDriver.dirtyRanges(ofBitmap: name) }

    /// The format's cluster size in bytes; nil for a format without clusters (raw).
    public var clusterBytes: Int? { rootDriver.clusterBytes }

    /// Stores `buffer` at `byteOffset` compressed, cluster by cluster (qemu-io's `write -c`): it
    /// covers whole clusters, or ends at the end of the image.
    public func writeCompressed(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        // A format without clusters stores nothing compressed: refused before any data is compressed.
        guard let clusterSize = clusterBytes else {
            throw BlockError(.notSupportedByFormat, "Compression not supported for this file format")
        }
        let count = Int64(buffer.count)
        try checkRange(byteOffset, count)
        let length = try length()
        guard byteOffset % Int64(clusterSize) == 0, count % Int64(clusterSize) == 0 || byteOffset + count == length else {
            throw BlockError(.invalidRequest, "a compressed write covers whole clusters of \(clusterSize) bytes inside the image")
        }
        for start in stride(from: 0, to: buffer.count, by: clusterSize) {
            let piece = UnsafeRawBufferPointer(rebasing: buffer[start..<min(start + clusterSize, buffer.count)])
            try writeCompressed(try compressCluster(at: byteOffset + Int64(start), piece))
        }
    }

    /// One cluster made ready for `writeCompressed(_:)`; no lock taken, so a copy compresses
    /// many at once and stores them in order.
    public func compressCluster(at byteOffset: Int64, _ bytes: UnsafeRawBufferPointer) throws(BlockError) -> CompressedCluster {
        try checkRange(byteOffset, Int64(bytes.count))
        return try rootDriver.compressCluster(at: byteOffset, bytes)
    }

    /// Stores a cluster `compressCluster` made.
    public func writeCompressed(_ cluster: CompressedCluster) throws(BlockError) {
        try admittedWrite { () throws(BlockError) in try rootDriver.writeCompressed(cluster) }
    }

    /// Drops every cluster the image holds, so it reads as its backing image (`qemu-img commit`'s
    /// last step); `notSupportedByFormat` for a format without an allocation map.
    public func makeEmpty() throws(BlockError) {
        try admittedWrite { () throws(BlockError) in try rootDriver.makeEmpty() }
    }

    /// Points the image at another backing file, or at none (`name` nil), in its header only
    /// (BlockDriver.changeBackingFile); the image must be writable.
    public func changeBackingFile(_ name: String?, format: String?) throws(BlockError) {
        try admittedWrite { () throws(BlockError) in try rootDriver.changeBackingFile(name, format: format) }
    }

    /// What this open asks of its nodes while active: as opened, but writable as it is now.
    private var currentRequest: PermissionRequest {
        var current = options
        current.writable = isWritable
        return current.userRequest
    }

    /// Whether writes are allowed now: changed by `reopen(writable:)`.
    public var isWritable: Bool { writableFlag.load(ordering: .acquiring) }
    /// Whether the image holds its permission locks: false for an inactive migration destination,
    /// and for a source after `inactivate()`.
    public var isActive: Bool { activeFlag.load(ordering: .acquiring) }

    private func checkWritable() throws(BlockError) {
        guard isActive else { throw BlockError(.readOnly, "'\(path)' is inactive (migration hand-over): activate it before writing") }
        guard isWritable else { throw BlockError(.readOnly, "Block node is read-only") }
    }

    /// Runs a change to the image once the write gate admits it. A closed gate means read-only,
    /// inactive, or a reopen or hand-over under way: the write waits for that to end, then
    /// looks again, so it is refused only if the image is then not writable.
    private func admittedWrite(_ body: () throws(BlockError) -> Void) throws(BlockError) {
        while !writeGate.enter() {
            accessChange.withLock { _ in }
            try checkWritable()
        }
        defer { writeGate.leave() }
        try body()
    }

    /// Runs a reopen or hand-over step with no write under way and none admitted: writes already
    /// in the drivers finish first, so none reaches the file after its permissions change. The
    /// gate opens again after, if the image may then be written.
    private func changingAccess(_ body: () throws(BlockError) -> Void) throws(BlockError) {
        try accessChange.withLock { _ throws(BlockError) in
            writeGate.close()
            defer { if isWritable && isActive { writeGate.open() } }
            try body()
        }
    }

    /// Runs a snapshot operation drained, as QEMU drains for one: no write under way and none
    /// admitted until it ends — a write planned in place before a snapshot is taken must not land
    /// in a cluster the snapshot then shares.
    private func drainedWrite(_ body: () throws(BlockError) -> Void) throws(BlockError) {
        try changingAccess { () throws(BlockError) in
            try checkWritable()
            try body()
        }
    }

    /// Refuses (`invalidRequest`) a range that is not inside the image — before a caller makes a
    /// buffer for it, too.
    public func checkRange(_ byteOffset: Int64, _ byteCount: Int64) throws(BlockError) {
        let length = try length()
        guard byteOffset >= 0, byteCount >= 0 else {
            throw BlockError(.invalidRequest, "offset and length must not be negative (offset \(byteOffset), length \(byteCount))")
        }
        let (end, overflow) = byteOffset.addingReportingOverflow(byteCount)
        guard !overflow, end <= length else {
            throw BlockError(.invalidRequest, "\(byteCount) bytes at offset \(byteOffset) reach past the end of the image (\(length) bytes)")
        }
    }

    /// QEMU's rule for probed raw images: a write may not make block 0 look like another format,
    /// or the next probing open would read the guest's data as image metadata.
    private func refuseProbeChange(at byteOffset: Int64, _ buffer: UnsafeRawBufferPointer) throws(BlockError) {
        var header = try Self.readHeader(of: root.driver)
        let start = Int(byteOffset)
        for index in 0..<min(buffer.count, header.count - start) { header[start + index] = buffer[index] }
        let looksLike = FormatProbe.format(ofHeader: header, among: [])
        if looksLike != "raw" {
            throw BlockError(.readOnly, "Operation not permitted: this write would make block 0 of '\(path)' look like a \(looksLike) image, and its format was only guessed (give -f raw)")
        }
    }

    // MARK: reopen and hand-over

    /// Switches between read-only and read-write, keeping the locks continuous: the new
    /// permissions are taken before the old are given up, and a refusal (QEMU's words) leaves
    /// the image as it was. Going read-only writes back what is cached first, while this open
    /// still holds write (QEMU's reopen flushes in its prepare step, too). Safe while other
    /// threads do I/O: writes under way finish first (QEMU drains), later ones wait for the
    /// reopen and then see its outcome; reads go on.
    public func reopen(writable: Bool) throws(BlockError) {
        try changingAccess { () throws(BlockError) in
            guard writable != isWritable else { return }
            if writable && options.forceShare {
                throw BlockError(.invalidRequest, "force-share=on can only be used with read-only images")
            }
            if !writable && isActive { try rootDriver.flush() }
            let before = currentRequest
            var reopened = options
            reopened.writable = writable
            if isActive { try root.setNeeds(reopened.userRequest, of: ObjectIdentifier(self)) }
            do throws(BlockError) {
                for node in root.writableSubtree { try node.driver.reopen(writable: writable) }
            } catch {
                for node in root.writableSubtree { try? node.driver.reopen(writable: !writable) }
                if isActive { try? root.setNeeds(before, of: ObjectIdentifier(self)) }
                throw error
            }
            writableFlag.store(writable, ordering: .releasing)
        }
    }

    /// Ends this open without waiting for the object to go: flushes, then drops the permission
    /// locks, so another process may open the image at once (descriptors close with the object).
    public func close() throws(BlockError) {
        try inactivate()
    }

    /// Gives the image up for another process to take over: flush, then drop the permission
    /// locks. Writes under way on other threads finish before the flush; later ones are refused.
    public func inactivate() throws(BlockError) {
        try changingAccess { () throws(BlockError) in
            guard isActive else { return }
            try rootDriver.flush()
            // While this open still holds write: nobody else has changed the file since the flush.
            let stamp = try? fileDriver.changeStamp()
            try root.setNeeds(.none, of: ObjectIdentifier(self))
            inactiveSince.withLock { $0 = stamp }
            activeFlag.store(false, ordering: .releasing)
        }
    }

    /// Takes the image over: the permission locks of this open, or QEMU's words if another
    /// process still holds what they protect. A format that caches metadata (qcow2) is refused
    /// (`stale`) if the image changed while this open was inactive: its tables here would be out
    /// of date, and the first allocation would hand out clusters the other process used. QEMU
    /// reloads them (invalidate-cache); here the caller opens the image again and activates that.
    public func activate() throws(BlockError) {
        try changingAccess { () throws(BlockError) in
            guard !isActive else { return }
            try root.setNeeds(currentRequest, of: ObjectIdentifier(self))
            // With the locks held, no other writer can change the file after this look.
            if root.subtree.contains(where: { $0.driver.cachesMetadata }) {
                do throws(BlockError) {
                    let since = inactiveSince.withLock { $0 }
                    guard let since, since == (try fileDriver.changeStamp()) else {
                        throw BlockError(.stale, "'\(path)' changed while this open was inactive (another process wrote it): open it again to take it over")
                    }
                } catch {
                    try? root.setNeeds(.none, of: ObjectIdentifier(self))
                    throw error
                }
            }
            activeFlag.store(true, ordering: .releasing)
        }
    }

    /// The protocol driver under the format (and any test wrappers).
    private var fileDriver: FileDriver { root.protocolNode.driver as! FileDriver }
}
