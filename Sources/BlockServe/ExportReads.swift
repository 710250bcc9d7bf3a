// ExportReads: the replies that carry the image's contents or its map — NBD_CMD_READ (a simple
// reply with the data, or structured chunks: data where the image has data, holes where block
// status says the range reads as zeroes, so zeroes never cross the wire; one data chunk for DF;
// data the image file stores as it reads sent from the page cache with sendfile) and
// NBD_CMD_BLOCK_STATUS (one chunk of descriptors per selected metadata context).
import BlockLayer
import NBD
import NIOCore

extension NBDExport {
    /// The most descriptors one block status chunk carries (the spec asks for at most 2^20).
    static let maximumDescriptors = 1 << 16

    /// NBD_CMD_READ of `range`, whose length the caller checked against `maximumPayload`;
    /// `oneChunk` (DF) sends it structured as one data chunk, zeroes and all. With `files`, data
    /// the image stores as it reads goes out with sendfile (`appendData`).
    func read(_ range: Range<Int64>, of image: BlockImage, cookie: UInt64, structured: Bool, oneChunk: Bool,
              files: ZeroCopyFiles?, allocator: ByteBufferAllocator) throws(NBDCommandFailure) -> ExportReply {
        // Room for the data when it is copied; for headers and short copies when it may not be.
        let copies = files == nil || Int64(range.count) < Self.minimumSendfileBytes
        var reply = ExportReplyBuilder(allocator: allocator, capacity: copies ? range.count + 64 : 256)
        do throws(BlockError) {
            guard structured else {
                reply.buffer.writeSimpleReply(cookie: cookie, error: nil)
                try appendData(range, of: image, to: &reply, files: files)
                return reply.finished()
            }
            // A data chunk carries at least a byte: an empty read is answered as without DF.
            if oneChunk && !range.isEmpty {
                reply.buffer.writeChunkHeader(cookie: cookie, type: .offsetData, flags: .done, length: 8 + range.count)
                reply.buffer.writeInteger(UInt64(range.lowerBound))
                try appendData(range, of: image, to: &reply, files: files)
                return reply.finished()
            }
            var lastChunk: ExportReplyBuilder.Position?
            try forEachZeroRun(range, of: image) { (run, isZero) throws(BlockError) in
                lastChunk = reply.position
                if isZero {
                    reply.buffer.writeHoleChunk(cookie: cookie, offset: UInt64(run.lowerBound), length: UInt32(run.count))
                } else {
                    reply.buffer.writeChunkHeader(cookie: cookie, type: .offsetData, flags: [], length: 8 + run.count)
                    reply.buffer.writeInteger(UInt64(run.lowerBound))
                    try appendData(run, of: image, to: &reply, files: files)
                }
            }
            // Every byte copied is read before anything is sent, so the last content chunk may
            // end the reply: no error can follow it. A sendfile that fails on the way (an I/O
            // error of the disk) ends the connection instead (swift-nio closes a channel whose
            // write fails), as the spec lets a server do with a reply it cannot complete.
            if let lastChunk {
                reply.setChunkFlags(.done, at: lastChunk)
            } else {
                reply.buffer.writeDoneChunk(cookie: cookie)
            }
            return reply.finished()
        } catch {
            throw NBDCommandFailure(error)
        }
    }

    /// The least data sent with sendfile: under it, copying into the reply costs less than one
    /// more system call per reply (and a split of the writev that sends replies together).
    static let minimumSendfileBytes: Int64 = 32 << 10

    /// Appends the image's bytes in `range` to the reply: runs the image stores as they read
    /// (BlockImage.hostExtent) as file regions for the kernel to send, when there are `files`,
    /// and the rest copied into the reply's buffer.
    ///
    /// No lock is held from here until the kernel has sent the region: the image keeps such a
    /// run's file range for that guest range as long as it is open (HostExtent.swift), and the
    /// connection keeps the image file open until its last reply is written (ZeroCopyFiles). A
    /// write to the same range racing this read may show in the bytes sent, as with a copying
    /// read racing it; data of another guest range never does.
    private func appendData(_ range: Range<Int64>, of image: BlockImage, to reply: inout ExportReplyBuilder,
                            files: ZeroCopyFiles?) throws(BlockError) {
        guard let files, Int64(range.count) >= Self.minimumSendfileBytes else {
            return try read(image, range.lowerBound, count: range.count, into: &reply.buffer)
        }
        var offset = range.lowerBound, copiedUpTo = range.lowerBound
        while offset < range.upperBound {
            let extent = try image.hostExtent(at: offset, byteCount: range.upperBound - offset)
            if let file = extent.file, extent.byteCount >= Self.minimumSendfileBytes {
                try read(image, copiedUpTo, count: Int(offset - copiedUpTo), into: &reply.buffer)
                reply.append(try files.region(of: file, at: extent.fileOffset, byteCount: extent.byteCount))
                copiedUpTo = offset + extent.byteCount
            }
            offset += extent.byteCount
        }
        try read(image, copiedUpTo, count: Int(range.upperBound - copiedUpTo), into: &reply.buffer)
    }

    /// Calls `body` for each run of `range` that reads as zeroes or not, in order, neighbours
    /// merged: a read's chunks. Nothing is collected on the way, since a read of 4 KiB is a
    /// few microseconds of work and the arrays of `statusRuns` would cost a fair part of them.
    private func forEachZeroRun(_ range: Range<Int64>, of image: BlockImage,
                                _ body: (Range<Int64>, Bool) throws(BlockError) -> Void) throws(BlockError) {
        var run: (range: Range<Int64>, isZero: Bool)?
        var offset = range.lowerBound
        while offset < range.upperBound {
            let status = try status(of: image, at: offset, upTo: range.upperBound)
            let end = offset + status.byteCount
            if let current = run, current.isZero == status.isZero {
                run = (current.range.lowerBound..<end, current.isZero)
            } else {
                if let current = run { try body(current.range, current.isZero) }
                run = (offset..<end, status.isZero)
            }
            offset = end
        }
        if let run { try body(run.range, run.isZero) }
    }

    /// The block status from `offset` on, up to `end`. A format that cannot tell gives allocated
    /// data, which is always true.
    private func status(of image: BlockImage, at offset: Int64, upTo end: Int64) throws(BlockError) -> BlockStatus {
        do {
            return try image.blockStatus(at: offset, byteCount: end - offset)
        } catch where error.code == .notSupportedByFormat {
            return BlockStatus(byteCount: end - offset, isData: true, isZero: false, isAllocated: true)
        }
    }

    /// The range cut into runs by block status, once for each of `keys`: neighbours with the same
    /// key merged, at most `maximumRuns` runs a key (the last may end before the range does).
    /// One walk serves every key, so a block status request for two contexts asks the image
    /// once.
    private func statusRuns<Key: Equatable>(_ range: Range<Int64>, of image: BlockImage, maximumRuns: Int = .max,
                                            keys: [(BlockStatus) -> Key]) throws(BlockError) -> [[(range: Range<Int64>, key: Key)]] {
        var runs = [[(range: Range<Int64>, key: Key)]](repeating: [], count: keys.count)
        var full = [Bool](repeating: false, count: keys.count)
        var offset = range.lowerBound
        while offset < range.upperBound && full.contains(false) {
            let status = try status(of: image, at: offset, upTo: range.upperBound)
            let end = offset + status.byteCount
            for (index, key) in keys.enumerated() where !full[index] {
                let value = key(status)
                if let last = runs[index].last, last.key == value {
                    runs[index][runs[index].count - 1].range = last.range.lowerBound..<end
                } else if runs[index].count == maximumRuns {
                    full[index] = true
                } else {
                    runs[index].append((offset..<end, value))
                }
            }
            offset = end
        }
        return runs
    }

    /// Appends `count` bytes of the image at `offset` to `buffer`, read straight into it.
    private func read(_ image: BlockImage, _ offset: Int64, count: Int, into buffer: inout ByteBuffer) throws(BlockError) {
        guard count > 0 else { return }
        var failure: BlockError?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { space in
            do throws(BlockError) {
                try image.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: space[0..<count]))
                return count
            } catch {
                failure = error
                return 0
            }
        }
        if let failure { throw failure }
    }

    /// NBD_CMD_BLOCK_STATUS of `range`: for each context one chunk, its descriptors merged where
    /// the status stays the same; with `onlyOne`, a single descriptor per context.
    func blockStatus(_ range: Range<Int64>, of image: BlockImage, contexts: [NBDMetaContext], onlyOne: Bool, cookie: UInt64,
                     allocator: ByteBufferAllocator) throws(NBDCommandFailure) -> ExportReply {
        let descriptorLists: [[(range: Range<Int64>, key: UInt32)]]
        do {
            descriptorLists = try statusRuns(range, of: image, maximumRuns: onlyOne ? 1 : Self.maximumDescriptors,
                                             keys: contexts.map { context in { context.value(of: $0) } })
        } catch {
            throw NBDCommandFailure(error)
        }
        var reply = allocator.buffer(capacity: 64 * contexts.count)
        for (index, (context, descriptors)) in zip(contexts, descriptorLists).enumerated() {
            reply.writeChunkHeader(cookie: cookie, type: .blockStatus, flags: index == contexts.count - 1 ? .done : [],
                                   length: 4 + 8 * descriptors.count)
            reply.writeInteger(context.id)
            for descriptor in descriptors {
                // At most the request's 32-bit length.
                reply.writeInteger(UInt32(descriptor.range.count))
                reply.writeInteger(descriptor.key)
            }
        }
        return ExportReply(reply)
    }
}

extension NBDMetaContext {
    /// The status of a run in this context.
    func value(of status: BlockStatus) -> UInt32 {
        switch self {
        case .baseAllocation:
            var flags: NBDAllocationStatus = []
            if !status.isData { flags.insert(.hole) }
            if status.isZero { flags.insert(.zero) }
            return flags.rawValue
        case .allocationDepth:
            return status.isAllocated ? UInt32(clamping: status.depth + 1) : 0
        }
    }
}
