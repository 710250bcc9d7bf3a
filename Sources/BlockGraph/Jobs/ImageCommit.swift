// ImageCommit: the job behind `blk commit` (QEMU's block/commit.c as qemu-img commit runs it):
// every run the images above the base hold — the overlay, and any image between it and the base
// — is written into the base, then the overlay is emptied (BlockDriver.makeEmpty) unless the
// caller keeps it.
//
// The base is a node of the overlay's own graph, opened read-only as every backing image is. The
// job becomes one more parent of it: it asks for write (and resize, to grow a shorter base),
// refusing others both, as QEMU's commit job does; the base's file takes those as locks (and its
// lease goes exclusive), then the base's nodes are reopened read-write. At the end the job lets
// go: the base is flushed by its reopen read-only and its locks fall back to the overlay's.
//
// Order, for a crash at any point:
//   1. each run above the base is written into the base by the base's own writer (data, or
//      zeroes where the run reads as zeroes), in its crash-safe order (Qcow2Writer.swift);
//   2. the base is flushed: everything written is durable;
//   3. the overlay is emptied, in its own crash-safe order (Qcow2MakeEmpty.swift).
// Until 2 the overlay is untouched and reads through to what it held; the base may hold part of
// the commit, which the overlay hides. After 2 the base holds all of it, so an overlay emptied
// only in part reads the same. Runs no image above the base holds are not read at all.
//
// The copy (1) is ChunkedCopy's loop, as convert and rebase run it: while one worker writes
// its chunk into the base, the other reads the next from above it, and chunks are written in
// guest order, so the base's new clusters lie in guest order as a one-thread copy laid them.
// The order of the writes inside step 1 does not matter to a crash: until 2 the overlay hides
// all of them. After each chunk the base's file is asked to start writing back (sync_file_range):
// the page cache would otherwise hold the whole copy until the flush in 2, which then waits for
// all of it; so the disk works while the copy goes on. It changes no order: a write not yet
// flushed may reach the disk or not, whenever the kernel chooses.
import BlockLocking
import SystemPackage

/// Commits an image's allocated runs, and those of the images between it and `base`, into
/// `base`, and optionally empties the image after, as `qemu-img commit` does.
public final class ImageCommit: Sendable {
    /// The image committed: open read-write.
    public let top: BlockImage
    /// The image committed into: a node of `top`'s backing chain.
    let base: BlockNode
    /// How far down the chain `base` is: 1 for `top`'s own backing image.
    let baseDepth: Int

    /// A commit of `top` into `basePath`, or into its own backing image when nil; QEMU's words
    /// when there is none. As QEMU's bdrv_find_backing_image, a relative `basePath` is taken
    /// beside each image of the chain in turn, and names the image below it if it is the same
    /// file, however named.
    public init(top: BlockImage, base basePath: String?) throws(BlockError) {
        self.top = top
        var chain: [BlockNode] = []
        var node = top.root
        while let backing = node.children.first(where: { $0.role == .backing })?.node {
            chain.append(backing)
            node = backing
        }
        guard !chain.isEmpty else { throw BlockError(.invalidRequest, "Image does not have a backing file") }
        guard let basePath else {
            base = chain[0]
            baseDepth = 1
            return
        }
        let above = [top.path] + chain.dropLast().map { Self.fileDriver(of: $0)?.path ?? "" }
        let index = chain.indices.first { index in
            let candidate = basePath.hasPrefix("/") ? basePath : Self.folder(of: above[index]) + basePath
            return Self.identity(ofPath: candidate).map { $0 == Self.identity(of: chain[index]) } ?? false
        }
        guard let index else { throw BlockError(.notFound, "Did not find '\(basePath)' in the backing chain of '\(top.path)'") }
        base = chain[index]
        baseDepth = index + 1
    }

    /// Writes every run above the base into it and makes it durable; then, with `emptyingTop`,
    /// empties `top`. `progress` is called with the guest bytes gone through. With `rateLimit`,
    /// the data copied averages at most its bytes per second.
    public func run(emptyingTop: Bool, workers: Int = ChunkedCopy.defaultWorkers, rateLimit: RateLimit? = nil,
                    progress: @escaping @Sendable (Int64) -> Void = { _ in }) throws(BlockError) {
        let length = try top.length()
        try withBaseWritable { () throws(BlockError) in
            if try base.driver.length() < length { try base.driver.truncate(to: length) }
            try copyRunsAboveBase(length: length, workers: workers, rateLimit, progress)
            try base.driver.flush()
        }
        if emptyingTop { try top.makeEmpty() }
    }

    /// Runs `body` with the job holding write on the base, and the base's nodes read-write.
    private func withBaseWritable(_ body: () throws(BlockError) -> Void) throws(BlockError) {
        let job = ObjectIdentifier(self)
        try base.setNeeds(PermissionRequest(held: [.consistentRead, .write, .resize], unshared: [.write, .resize]), of: job)
        var reopened: [BlockNode] = []
        defer {
            // Read-only again: a qcow2 base writes back and flushes what is cached first.
            for node in reopened.reversed() { try? node.driver.reopen(writable: false) }
            try? base.setNeeds(.none, of: job)
        }
        for node in base.writableSubtree.reversed() {
            try node.driver.reopen(writable: true)
            reopened.append(node)
        }
        try body()
        for node in reopened.reversed() { try node.driver.reopen(writable: false) }
        reopened = []
    }

    /// Step 1 of the order above. Workers (ChunkedCopy) find a chunk's runs above the base by
    /// block status and read them in parallel; the chunks are written into the base strictly in
    /// order, so its new clusters are laid out in guest order while the next chunks are read.
    private func copyRunsAboveBase(length: Int64, workers: Int, _ rateLimit: RateLimit?,
                                   _ progress: @escaping @Sendable (Int64) -> Void) throws(BlockError) {
        let chunks = ChunkedCopy(length: length, clusterBytes: base.driver.clusterBytes)
        let baseFile = Self.fileDriver(of: base)
        try chunks.run(workers: workers, buffers: 1, progress: progress, prepare: { (chunk, buffers) throws(BlockError) in
            try self.runsAboveBase(in: chunk, into: buffers[0])
        }, finish: { (chunk, runs, buffers) throws(BlockError) in
            var copied = 0
            for run in runs {
                let at = chunk.offset + Int64(run.range.lowerBound)
                if run.zeroes {
                    try self.base.driver.writeZeroes(at: at, byteCount: Int64(run.range.count), mayUnmap: true)
                } else {
                    try self.base.driver.write(at: at, from: UnsafeRawBufferPointer(rebasing: buffers[0][run.range]))
                    copied += run.range.count
                }
            }
            baseFile?.startWriteback()
            rateLimit?.pace(Int64(copied))
        })
    }

    /// The runs of `chunk` above the base, their bytes read into `buffer` at their places; runs
    /// the base shows through are neither read nor listed.
    private func runsAboveBase(in chunk: ChunkedCopy.Chunk, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) -> [ChunkedCopy.Piece] {
        var runs: [ChunkedCopy.Piece] = []
        try ChunkedCopy.forEachRun(of: top, in: chunk) { (range, status) throws(BlockError) in
            // Held above the base, or zeroes because an image above it ends before the run.
            let aboveBase = status.isAllocated ? status.depth < baseDepth : status.isPastBackingEnd && status.depth + 1 < baseDepth
            guard aboveBase else { return }
            let zeroes = status.isZero && !status.isData
            if !zeroes { try top.read(at: chunk.offset + Int64(range.lowerBound), into: UnsafeMutableRawBufferPointer(rebasing: buffer[range])) }
            runs.appendMerging(range, zeroes: zeroes)
        }
        return runs
    }

    /// The file driver a node stores its bytes through.
    private static func fileDriver(of node: BlockNode) -> FileDriver? { node.protocolNode.driver as? FileDriver }

    /// The folder part of `path` with its slash, or "" for a bare name (the current folder).
    private static func folder(of path: String) -> String {
        path.lastIndex(of: "/").map { String(path[...$0]) } ?? ""
    }

    /// The file a node stores its bytes in, as the kernel knows it.
    private static func identity(of node: BlockNode) -> FileIdentity? {
        fileDriver(of: node).flatMap { try? LockHolderScan.identity(of: $0.locks.descriptor, on: nil).get() }
    }

    /// The file at `path`, as the kernel knows it; nil if it cannot be opened.
    private static func identity(ofPath path: String) -> FileIdentity? {
        guard let descriptor = try? FileDescriptor.open(path, .readOnly, options: .closeOnExec) else { return nil }
        defer { try? descriptor.close() }
        return try? LockHolderScan.identity(of: descriptor, on: nil).get()
    }
}
