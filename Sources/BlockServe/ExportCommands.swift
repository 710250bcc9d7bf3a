// ExportCommands: how transmission requests map onto BlockImage calls, and the checks before
// them. Blocking: the caller runs it on a thread of its own, never on an event loop. The whole
// reply is made before any of it is sent, so a failure half way still gets a well-formed reply
// (only data the kernel sends from the image file is read on the way: ExportReads.swift).
//
// Checks, in the spec's terms: an unknown command or a flag not valid for the command (or not
// advertised: DF without structured replies) is EINVAL; a write, trim or write-zeroes on a read-only export is
// EPERM; a range past the end is ENOSPC for writes and write-zeroes, EINVAL for the rest; a read
// over the maximum payload is EOVERFLOW with structured replies (EINVAL without); a range not a
// multiple of the minimum block size is EINVAL.
import BlockLayer
import NBD
import NIOCore

extension NBDExport {
    /// The reply to `request` (any command but NBD_CMD_DISC) under `session`'s terms; read data
    /// goes out with sendfile from `files` where the image allows it.
    func reply(to request: NBDRequest, in session: NBDSession, files: ZeroCopyFiles?, allocator: ByteBufferAllocator) -> ExportReply {
        // One image for the whole request: a hand-over's activation may replace the export's
        // image between two of its steps, and each look takes the export's lock.
        let image = self.image
        do throws(NBDCommandFailure) {
            let range = try checkedRange(of: request, in: session, image: image)
            switch request.command {
            case .read:
                return try read(range, of: image, cookie: request.cookie, structured: session.structuredReplies,
                                oneChunk: request.flags.contains(.dontFragment), files: files, allocator: allocator)
            case .blockStatus:
                return try blockStatus(range, of: image, contexts: session.metaContexts, onlyOne: request.flags.contains(.requestOne),
                                       cookie: request.cookie, allocator: allocator)
            default:
                try perform(request, range, on: image)
                var reply = allocator.buffer(capacity: ByteBuffer.nbdSimpleReplyHeaderSize)
                reply.writeSimpleReply(cookie: request.cookie, error: nil)
                return ExportReply(reply)
            }
        } catch {
            var reply = allocator.buffer(capacity: 64 + error.message.utf8.count)
            // Structured replies carry the message; reads and block status must use them once
            // negotiated, the other commands may answer simply.
            if session.structuredReplies && (request.command == .read || request.command == .blockStatus) {
                reply.writeErrorChunk(cookie: request.cookie, error: error.code, message: error.message)
            } else {
                reply.writeSimpleReply(cookie: request.cookie, error: error.code)
            }
            return ExportReply(reply)
        }
    }

    /// The flags valid for each command this export serves.
    private static let validFlags: [NBDCommand: NBDCommandFlags] = [
        .read: [.fua, .dontFragment], .write: [.fua], .flush: [.fua], .trim: [.fua], .cache: [.fua],
        .writeZeroes: [.fua, .noHole, .fastZero], .blockStatus: [.fua, .requestOne],
    ]

    /// The request's range, once the command, its flags, the export's access and the range
    /// itself are checked.
    private func checkedRange(of request: NBDRequest, in session: NBDSession, image: BlockImage) throws(NBDCommandFailure) -> Range<Int64> {
        guard let valid = Self.validFlags[request.command] else {
            throw NBDCommandFailure(.invalid, "unknown command \(request.command.rawValue)")
        }
        guard valid.isSuperset(of: request.flags) else {
            throw NBDCommandFailure(.invalid, "flags 0x\(String(request.flags.rawValue, radix: 16)) are not valid for \(request.command)")
        }
        if request.flags.contains(.dontFragment) && !session.structuredReplies {
            throw NBDCommandFailure(.invalid, "NBD_CMD_FLAG_DF without structured replies")
        }
        let writes = request.command == .write || request.command == .trim || request.command == .writeZeroes
        if writes && !image.isWritable { throw NBDCommandFailure(.permission, "the export is read-only") }
        // A migration hand-over's inactive export: writes are refused by BlockImage itself (EPERM
        // too), a flush here, as QEMU's server does: this process holds no write permission.
        if request.command == .flush && !image.isActive { throw NBDCommandFailure(.permission, "the export is inactive (migration hand-over)") }
        if request.command == .flush { return 0..<0 }
        if request.command == .blockStatus {
            guard !session.metaContexts.isEmpty else { throw NBDCommandFailure(.invalid, "no metadata context was selected") }
            guard request.length > 0 else { throw NBDCommandFailure(.invalid, "block status of an empty range") }
        }
        let size: UInt64
        do { size = UInt64(try image.length()) } catch { throw NBDCommandFailure(error) }
        let (end, overflow) = request.offset.addingReportingOverflow(UInt64(request.length))
        guard !overflow, end <= size else {
            let code: NBDErrorCode = request.command == .write || request.command == .writeZeroes ? .noSpace : .invalid
            throw NBDCommandFailure(code, "\(request.length) bytes at offset \(request.offset) reach past the end of the export (\(size) bytes)")
        }
        guard request.offset % UInt64(minimumBlockSize) == 0, request.length % minimumBlockSize == 0 else {
            throw NBDCommandFailure(.invalid, "offset and length must be multiples of \(minimumBlockSize)")
        }
        if request.command == .read && request.length > maximumPayload {
            throw NBDCommandFailure(session.structuredReplies ? .overflow : .invalid,
                                    "a read of \(request.length) bytes, over the maximum of \(maximumPayload)")
        }
        // Both ends are within a size that fits Int64.
        return Int64(request.offset)..<Int64(end)
    }

    /// The commands whose reply is only a status: write, flush, trim, write-zeroes, cache.
    private func perform(_ request: NBDRequest, _ range: Range<Int64>, on image: BlockImage) throws(NBDCommandFailure) {
        do throws(BlockError) {
            switch request.command {
            case .write:
                var failure: BlockError?
                request.payload.withUnsafeReadableBytes { bytes in
                    do throws(BlockError) {
                        if detectZeroes != .off && bytes.isAllZeroes {
                            try image.writeZeroes(at: range.lowerBound, byteCount: Int64(range.count),
                                                  mayUnmap: detectZeroes == .unmap && discard == .unmap)
                        } else {
                            try image.write(at: range.lowerBound, from: bytes)
                        }
                    } catch {
                        failure = error
                    }
                }
                if let failure { throw failure }
            case .flush:
                try image.flush()
            case .trim:
                // What a trimmed range reads is unspecified: unchanged (ignore), or zeroes,
                // deallocated where the format can (unmap).
                if discard == .unmap && !range.isEmpty {
                    try image.writeZeroes(at: range.lowerBound, byteCount: Int64(range.count), mayUnmap: true)
                }
            case .writeZeroes:
                if !range.isEmpty {
                    try image.writeZeroes(at: range.lowerBound, byteCount: Int64(range.count),
                                          mayUnmap: discard == .unmap && !request.flags.contains(.noHole),
                                          onlyIfFast: request.flags.contains(.fastZero))
                }
            case .cache:
                try prefetch(range, of: image)
            default:
                preconditionFailure("\(request.command) has a reply of its own")
            }
            if request.flags.contains(.fua) && request.command != .flush && request.command != .cache { try image.flush() }
        } catch {
            throw NBDCommandFailure(error)
        }
    }

    /// NBD_CMD_CACHE: reads the range, a piece at a time, so that the page cache and the
    /// format's metadata cache hold it; the bytes go nowhere.
    private func prefetch(_ range: Range<Int64>, of image: BlockImage) throws(BlockError) {
        let piece = Int(min(Int64(1 << 20), Int64(range.count)))
        guard piece > 0 else { return }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: piece, alignment: 4096)
        defer { scratch.deallocate() }
        var offset = range.lowerBound
        while offset < range.upperBound {
            let count = Int(min(Int64(piece), range.upperBound - offset))
            try image.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<count]))
            offset += Int64(count)
        }
    }
}
