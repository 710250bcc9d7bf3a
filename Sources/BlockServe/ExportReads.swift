// ExportReads: the replies that carry the image's contents or its map — NBD_CMD_READ (a simple
// reply with the data, or structured chunks: data where the image has data, holes where block
// status says the range reads as zeroes, so zeroes never cross the wire; one data chunk for DF) and
// NBD_CMD_BLOCK_STATUS (one chunk of descriptors per selected metadata context).
import BlockLayer
import NBD
import NIOCore

extension NBDExport {
    /// The most descriptors one block status chunk carries (the spec asks for at most 2^20).
    static let maximumDescriptors = 1 << 16

    /// NBD_CMD_READ of `range`, whose length the caller checked against `maximumPayload`;
    /// `oneChunk` (DF) sends it structured as one data chunk, zeroes and all.
    func read(_ range: Range<Int64>, of image: BlockImage, cookie: UInt64, structured: Bool, oneChunk: Bool,
              allocator: ByteBufferAllocator) throws(NBDCommandFailure) -> ByteBuffer {
        do throws(BlockError) {
            guard structured else {
                var reply = allocator.buffer(capacity: ByteBuffer.nbdSimpleReplyHeaderSize + range.count)
                reply.writeSimpleReply(cookie: cookie, error: nil)
                try read(image, range.lowerBound, count: range.count, into: &reply)
                return reply
            }
            var reply = allocator.buffer(capacity: range.count + 64)
            // A data chunk carries at least a byte: an empty read is answered as without DF.
            if oneChunk && !range.isEmpty {
                reply.writeChunkHeader(cookie: cookie, type: .offsetData, flags: .done, length: 8 + range.count)
                reply.writeInteger(UInt64(range.lowerBound))
                try read(image, range.lowerBound, count: range.count, into: &reply)
                return reply
            }
            var lastChunk: Int?
            for run in try statusRuns(range, of: image, keys: [\.isZero])[0] {
                lastChunk = reply.writerIndex
                if run.key {
                    reply.writeHoleChunk(cookie: cookie, offset: UInt64(run.range.lowerBound), length: UInt32(run.range.count))
                } else {
                    reply.writeChunkHeader(cookie: cookie, type: .offsetData, flags: [], length: 8 + run.range.count)
                    reply.writeInteger(UInt64(run.range.lowerBound))
                    try read(image, run.range.lowerBound, count: run.range.count, into: &reply)
                }
            }
            // Every byte is read before anything is sent, so the last content chunk may end the
            // reply: no error can follow it.
            if let lastChunk {
                reply.setInteger(NBDReplyFlags.done.rawValue, at: lastChunk + 4)
            } else {
                reply.writeDoneChunk(cookie: cookie)
            }
            return reply
        } catch {
            throw NBDCommandFailure(error)
        }
    }

    /// The range cut into runs by block status, once for each of `keys`: neighbours with the same
    /// key merged, at most `maximumRuns` runs a key (the last may end before the range does).
    /// One walk serves every key, so a block status request for two contexts asks the image
    /// once. A format that cannot tell gives one run of allocated data, which is always true.
    private func statusRuns<Key: Equatable>(_ range: Range<Int64>, of image: BlockImage, maximumRuns: Int = .max,
                                            keys: [(BlockStatus) -> Key]) throws(BlockError) -> [[(range: Range<Int64>, key: Key)]] {
        var runs = [[(range: Range<Int64>, key: Key)]](repeating: [], count: keys.count)
        var full = [Bool](repeating: false, count: keys.count)
        var offset = range.lowerBound
        while offset < range.upperBound && full.contains(false) {
            let status: BlockStatus
            do {
                status = try image.blockStatus(at: offset, byteCount: range.upperBound - offset)
            } catch where error.code == .notSupportedByFormat {
                status = BlockStatus(byteCount: range.upperBound - offset, isData: true, isZero: false, isAllocated: true)
            }
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
                     allocator: ByteBufferAllocator) throws(NBDCommandFailure) -> ByteBuffer {
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
        return reply
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
