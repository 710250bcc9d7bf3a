// StoreView: the store as one transaction sees it — the superblock, both directory slots and
// which of them is current — read from the disk under the transaction lock.
import BlockLayer

/// What a directory slot holds.
public enum SlotState: Sendable, Hashable {
    /// All zeroes: never written.
    case empty
    case valid(generation: UInt64)
    /// Not all zeroes, and not a valid directory: why.
    case damaged(String)
}

struct StoreView: Sendable {
    /// nil: the disk is all zeroes at block 0 — no state yet.
    var superblock: Superblock?
    var directory: StateDirectory?
    /// Which slot (0: A, 1: B) holds `directory`.
    var currentSlot = 0
    var slots: [SlotState] = [.empty, .empty]

    static let slotNames = ["A", "B"]

    static func load(_ image: BlockImage, path: String) throws(StateError) -> StoreView {
        let diskSize = try blockCall { () throws(BlockError) in try image.length() }
        guard diskSize >= Int64(Superblock.blockSize) else { return StoreView() }
        let block = try readBytes(image, at: 0, count: Superblock.blockSize)
        guard let superblock = try Superblock.parse(block, diskSize: diskSize) else {
            guard block.allSatisfy({ $0 == 0 }) else {
                throw StateError(.notAStore, "'\(path)' holds data that is not a device-state store (give `blk state init --force` to replace it)")
            }
            return StoreView()
        }
        var view = StoreView(superblock: superblock)
        var best: (slot: Int, directory: StateDirectory)?
        for (slot, offset) in superblock.slotOffsets.enumerated() {
            let first = try readBytes(image, at: offset, count: Superblock.blockSize)
            if first.allSatisfy({ $0 == 0 }) { continue }
            do throws(StateError) {
                guard let length = StateDirectory.usedLength(ofSlotStart: first),
                      length >= StateDirectory.headerLength + 4, length <= superblock.slotSize else {
                    throw StateError(.corrupt, "directory slot \(slotNames[slot]) is damaged: no directory")
                }
                // The first block is in hand: read only the rest of a longer directory.
                let bytes = length <= first.count ? Array(first[0..<length])
                    : first + (try readBytes(image, at: offset + Int64(first.count), count: length - first.count))
                let directory = try StateDirectory.parse(bytes, slot: slotNames[slot], superblock: superblock)
                view.slots[slot] = .valid(generation: directory.generation)
                if directory.generation > best?.directory.generation ?? 0 { best = (slot, directory) }
            } catch {
                view.slots[slot] = .damaged(error.message)
            }
        }
        guard let best else {
            let problems = view.slots.compactMap { if case .damaged(let why) = $0 { why } else { nil } }
            throw StateError(.corrupt, "the state store in '\(path)' has no valid directory: "
                             + (problems.isEmpty ? "both slots are empty" : problems.joined(separator: "; ")))
        }
        view.directory = best.directory
        view.currentSlot = best.slot
        return view
    }

    /// Warnings for the user: a damaged slot means the state one commit back is gone (or, for
    /// the newer slot, that the current state is the one before the last commit).
    var damageWarnings: [String] {
        slots.enumerated().compactMap { (slot, state) in
            guard case .damaged(let why) = state else { return nil }
            return "\(why); generation \(directory?.generation ?? 0) from slot \(Self.slotNames[currentSlot]) serves, and the next commit rewrites slot \(Self.slotNames[slot])"
        }
    }
}

func blockCall<Value>(_ body: () throws(BlockError) -> Value) throws(StateError) -> Value {
    do throws(BlockError) {
        return try body()
    } catch {
        throw StateError(error)
    }
}

func readBytes(_ image: BlockImage, at byteOffset: Int64, count: Int) throws(StateError) -> [UInt8] {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: Superblock.blockSize)
    defer { buffer.deallocate() }
    let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
    try blockCall { () throws(BlockError) in try image.read(at: byteOffset, into: part) }
    return Array(part)
}

/// Writes `bytes` padded with zeroes to whole blocks (whole blocks keep O_DIRECT and qcow2
/// clusters free of read-modify-write).
func writeBlocks(_ image: BlockImage, at byteOffset: Int64, _ bytes: UnsafeRawBufferPointer) throws(StateError) {
    let size = Int(ExtentAllocator.roundUp(UInt64(max(bytes.count, 1))))
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: Superblock.blockSize)
    defer { buffer.deallocate() }
    buffer.copyMemory(from: bytes)
    UnsafeMutableRawBufferPointer(rebasing: buffer[bytes.count...]).initializeMemory(as: UInt8.self, repeating: 0)
    try blockCall { () throws(BlockError) in try image.write(at: byteOffset, from: UnsafeRawBufferPointer(buffer)) }
}

/// `Array.withUnsafeBytes` with a typed error (the standard one only rethrows untyped).
func withBytes<Result>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(StateError) -> Result) throws(StateError) -> Result {
    let outcome: Swift.Result<Result, StateError> = bytes.withUnsafeBytes { buffer in
        do throws(StateError) {
            return .success(try body(buffer))
        } catch {
            return .failure(error)
        }
    }
    return try outcome.get()
}
