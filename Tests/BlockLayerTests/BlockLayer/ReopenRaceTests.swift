// Reopen and the hand-over while other threads read and write the same open image. A reopen
// once closed the old descriptor under requests that had already loaded its number; a file the
// process opened next took the number, and a write landed there. So another thread opens files
// all the while, to take every number that comes free. And a write that had passed the image's
// checks could land after inactivate or a reopen read-only returned, once the write permission
// was given up.
import BlockLayer
import Foundation
import Glibc
import Posix
import Synchronization
import SystemPackage
import Testing

@Suite("reopen racing I/O")
struct ReopenRaceTests {
    static let blockSize = 4096
    static let slotsPerWriter = 32
    static let writers = 2
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// One block as writer `writer` writes it in slot `slot` the `generation`-th time: those
    /// three numbers, then a byte they determine.
    static func block(writer: Int, slot: Int, generation: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: UInt8((writer * 31 + slot * 7 + generation) % 251 + 1), count: blockSize)
        for (index, number) in [writer, slot, generation].enumerated() {
            withUnsafeBytes(of: UInt64(number).littleEndian) { bytes.replaceSubrange(index * 8..<index * 8 + 8, with: $0) }
        }
        return bytes
    }

    /// Whether the block read at `offset` holds that offset's bytes: still zeroes, or written by
    /// the writer of its slot. Only the writer and slot fields are the same in every generation.
    /// A buffered read beside a write of the same page may see the copy half done (Linux does
    /// not make them atomic with each other), so generation and fill may mix two writes. Each
    /// field is therefore the slot's own or still zero; bytes from another offset or file are not.
    static func belongs(_ bytes: UnsafeRawBufferPointer, at offset: Int64) -> Bool {
        let slotIndex = Int(offset) / blockSize
        let expected = [slotIndex / slotsPerWriter, slotIndex % slotsPerWriter]
        return expected.indices.allSatisfy { index in
            let number = Int(UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self)))
            return number == expected[index] || number == 0
        }
    }

    /// The requests the threads make, on an image or straight on its file driver.
    struct Target: Sendable {
        var read: @Sendable (Int64, UnsafeMutableRawBufferPointer) throws(BlockError) -> Void
        var write: @Sendable (Int64, UnsafeRawBufferPointer) throws(BlockError) -> Void
        var reopen: @Sendable (Bool) throws(BlockError) -> Void
    }

    enum Layer: String, CaseIterable, Sendable {
        case image, fileDriver
    }

    @Test("readers and writers beside repeated reopens: no byte lands in another file, written data reads back, errors only read-only",
          arguments: Layer.allCases, [CacheMode.writeback, .none])
    func reopenRacingIO(layer: Layer, cache: CacheMode) throws {
        let path = try scratch.rawImage(bytes: Self.writers * Self.slotsPerWriter * Self.blockSize)
        let target: Target
        switch layer {
        case .image:
            let image = try BlockImage.open(path, options: OpenOptions(format: "raw", writable: true, cache: cache))
            target = Target(read: { (offset, buffer) throws(BlockError) in try image.read(at: offset, into: buffer) },
                            write: { (offset, buffer) throws(BlockError) in try image.write(at: offset, from: buffer) },
                            reopen: { (writable) throws(BlockError) in try image.reopen(writable: writable) })
        case .fileDriver:
            let driver = try FileDriver(path: path, writable: true, locking: .auto, cache: cache)
            target = Target(read: { (offset, buffer) throws(BlockError) in try driver.read(at: offset, into: buffer) },
                            write: { (offset, buffer) throws(BlockError) in try driver.write(at: offset, from: buffer) },
                            reopen: { (writable) throws(BlockError) in try driver.reopen(writable: writable) })
        }
        let others = (0..<8).map { scratch.directory + "/other-\($0)" }
        for other in others { try scratch.write(other, Data()) }

        let done = Atomic(false)
        let failures = Mutex<[String]>([])
        let successfulWrites = Atomic(0), refusedWrites = Atomic(0)
        let threads = DispatchGroup()
        func thread(_ body: @escaping @Sendable () -> Void) {
            threads.enter()
            Thread.detachNewThread {
                defer { threads.leave() }
                body()
            }
        }
        @Sendable func fail(_ text: String) {
            failures.withLock { $0.append(text) }
            done.store(true, ordering: .releasing)
        }

        for writer in 0..<Self.writers {
            thread {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.blockSize, alignment: Self.blockSize)
                defer { buffer.deallocate() }
                // What each slot of this writer holds: only this thread writes them.
                var held = [[UInt8]](repeating: [UInt8](repeating: 0, count: Self.blockSize), count: Self.slotsPerWriter)
                var generation = 0
                while !done.load(ordering: .acquiring) {
                    let slot = generation % Self.slotsPerWriter
                    let offset = Int64((writer * Self.slotsPerWriter + slot) * Self.blockSize)
                    let bytes = Self.block(writer: writer, slot: slot, generation: generation)
                    generation += 1
                    bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
                    do throws(BlockError) {
                        try target.write(offset, UnsafeRawBufferPointer(buffer))
                        held[slot] = bytes
                        successfulWrites.add(1, ordering: .relaxed)
                    } catch where error.code == .readOnly {
                        refusedWrites.add(1, ordering: .relaxed)
                    } catch {
                        return fail("write at \(offset): \(error)")
                    }
                    do throws(BlockError) {
                        try target.read(offset, buffer)
                    } catch {
                        return fail("read back at \(offset): \(error)")
                    }
                    if !held[slot].withUnsafeBytes({ $0.elementsEqual(buffer) }) {
                        return fail("slot \(slot) of writer \(writer) did not read back what its last successful write wrote")
                    }
                }
            }
        }
        thread {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.blockSize, alignment: Self.blockSize)
            defer { buffer.deallocate() }
            while !done.load(ordering: .acquiring) {
                let offset = Int64(Int.random(in: 0..<Self.writers * Self.slotsPerWriter) * Self.blockSize)
                do throws(BlockError) {
                    try target.read(offset, buffer)
                } catch {
                    return fail("read at \(offset): \(error)")
                }
                if !Self.belongs(UnsafeRawBufferPointer(buffer), at: offset) { return fail("the block at \(offset) holds bytes of another block") }
            }
        }
        // Takes the lowest free descriptor numbers, the ones a reopen used to free, and holds
        // them for a moment: the files are opened for writing, so a stray write would land.
        thread {
            while !done.load(ordering: .acquiring) {
                let descriptors = others.map { open($0, O_RDWR | O_CLOEXEC) }
                descriptors.filter { $0 >= 0 }.forEach { close($0) }
            }
        }
        do {
            defer {
                done.store(true, ordering: .releasing)
                #expect(threads.wait(timeout: .now() + 120) == .success, "the threads did not finish")
            }
            // Until the writers have made their attempts, however the threads were scheduled.
            var reopens = 0
            while !done.load(ordering: .acquiring)
                    && (reopens < 200 || successfulWrites.load(ordering: .relaxed) + refusedWrites.load(ordering: .relaxed) < 5000) {
                try target.reopen(false)
                try target.reopen(true)
                reopens += 1
            }
        }
        #expect(failures.withLock { $0 } == [])
        for other in others {
            let size = try FileManager.default.attributesOfItem(atPath: other)[.size] as? Int
            #expect(size == 0, "\(other) got bytes meant for the image")
        }
        #expect(successfulWrites.load(ordering: .relaxed) > 0 && refusedWrites.load(ordering: .relaxed) > 0,
                "writes ran both while writable and while read-only")
    }

    enum Change: String, CaseIterable, Sendable {
        case reopenReadOnly, inactivate
    }

    @Test("no write reaches the file after a reopen read-only or inactivate returns, with writers under way",
          arguments: Change.allCases)
    func noWriteAfterGivingUpWrite(change: Change) throws {
        let path = try scratch.rawImage(bytes: Self.writers * Self.blockSize)
        // O_DIRECT and unaligned writes: each write reads its block before it writes it back, so
        // one that passed the image's checks spends a while on its way to the file.
        let image = try BlockImage.open(path, options: OpenOptions(format: "raw", writable: true, cache: .none))
        let observer = open(path, O_RDONLY | O_CLOEXEC)
        defer { close(observer) }
        func contents() -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: Self.writers * Self.blockSize)
            let read = bytes.withUnsafeMutableBytes { FileDescriptor(rawValue: observer).readFully(at: 0, into: $0) }
            guard case .failure(let short) = read else { return bytes }
            return Array(bytes.prefix(short.transferred))
        }

        let done = Atomic(false)
        let failures = Mutex<[String]>([])
        /// Writes each writer has finished, refused or not.
        let finished = Mutex([Int](repeating: 0, count: Self.writers))
        let successfulWrites = Atomic(0)
        let threads = DispatchGroup()
        for writer in 0..<Self.writers {
            threads.enter()
            Thread.detachNewThread {
                defer { threads.leave() }
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1000, alignment: 16)
                defer { buffer.deallocate() }
                var generation = 0
                while !done.load(ordering: .acquiring) {
                    generation += 1
                    buffer.initializeMemory(as: UInt8.self, repeating: UInt8(generation % 255 + 1))
                    do throws(BlockError) {
                        try image.write(at: Int64(writer * Self.blockSize + 100), from: UnsafeRawBufferPointer(buffer))
                        successfulWrites.add(1, ordering: .relaxed)
                    } catch where error.code == .readOnly {
                    } catch {
                        failures.withLock { $0.append("write: \(error)") }
                        return done.store(true, ordering: .releasing)
                    }
                    finished.withLock { $0[writer] += 1 }
                }
            }
        }
        do {
            defer {
                done.store(true, ordering: .releasing)
                #expect(threads.wait(timeout: .now() + 120) == .success, "the writers did not finish")
            }
            for cycle in 0..<300 where !done.load(ordering: .acquiring) {
                switch change {
                case .reopenReadOnly: try image.reopen(writable: false)
                case .inactivate: try image.inactivate()
                }
                let seen = finished.withLock { $0 }
                let before = contents()
                // A write under way when the change returned is done once its writer has
                // finished one more.
                #expect(eventually { finished.withLock { zip($0, seen).allSatisfy { $0 > $1 } } })
                if contents() != before {
                    failures.withLock { $0.append("cycle \(cycle): the file changed after \(change) returned") }
                    break
                }
                switch change {
                case .reopenReadOnly: try image.reopen(writable: true)
                case .inactivate: try image.activate()
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(successfulWrites.load(ordering: .relaxed) > 0)
    }
}
