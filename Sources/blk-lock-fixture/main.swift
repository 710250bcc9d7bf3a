// blk-lock-fixture: a process that takes locks when told, for the lock tests. Locks held and
// checked by one process prove nothing about another, so every holder and waiter in the tests
// is one of these (or `blk`, or QEMU).
//
// Protocol: one command per line on stdin, one answer per line on stdout ("ready" first).
//   open PATH rw|ro [auto|on|off]     → ok HANDLE
//   perms HANDLE HELD UNSHARED        → ok          (lists like consistent-read,write or -)
//   lock HANDLE KIND [SECONDS]        → ok          (blocking, in the kernel)
//   trylock HANDLE KIND               → ok | wouldblock
//   asynclock HANDLE KIND [SECONDS]   → started, later: async ok | async err …
//   cancel                            → ok          (cancels the async lock's task)
//   unlock HANDLE KIND · close HANDLE · status HANDLE → ok [KIND DEPTH]
// Whole images through the block layer (handles of their own):
//   image PATH ro|rw [inactive] [auto|on|off] → ok HANDLE
//   reopen HANDLE ro|rw · activate HANDLE · inactivate HANDLE → ok
//   read HANDLE OFFSET LENGTH         → ok
//   write HANDLE OFFSET LENGTH BYTE   → ok          (LENGTH bytes of BYTE, then a flush)
//   flush HANDLE                      → ok
//   lease HANDLE                      → ok none|shared|exclusive [lost]
// Failures answer "err CODE MESSAGE" with newlines in MESSAGE written as "\n".
import BlockLayer
import BlockLocking
import Glibc
import Posix
import SystemPackage

func reply(_ line: String) {
    _ = Array((line + "\n").utf8).withUnsafeBytes { FileDescriptor.standardOutput.writeFully($0) }
}

func warn(_ message: String) {
    _ = Array(("warning: " + message + "\n").utf8).withUnsafeBytes { FileDescriptor.standardError.writeFully($0) }
}

func errorReply(_ error: LockingError) -> String {
    "err \(error.code) " + error.description.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\\n")
}

func permissions(_ list: Substring) -> ImagePermissions? {
    if list == "-" { return [] }
    var set: ImagePermissions = []
    for name in list.split(separator: ",") {
        guard let permission = ImagePermissions.each.first(where: { $0.jsonNames == [String(name)] }) else { return nil }
        set.insert(permission)
    }
    return set
}

func deadline(_ words: ArraySlice<Substring>, at index: Int) -> LockDeadline {
    guard words.count > index, let seconds = Double(words[words.startIndex + index]) else { return .never }
    return .after(seconds: seconds)
}

func blockReply(_ error: BlockError) -> String {
    "err \(error.code) " + error.description.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\\n")
}

/// Block-layer commands; nil when `words` is not one.
@MainActor
func blockCommand(_ words: ArraySlice<Substring>) -> String? {
    let handle = words.count > 1 ? Int(words[words.startIndex + 1]).flatMap { blockImages[$0] } : nil
    do throws(BlockError) {
        switch (words.first, handle) {
        case ("image", _) where words.count >= 3:
            let path = String(words[words.startIndex + 1])
            let locking = words.dropFirst(3).compactMap { LockingMode(rawValue: String($0)) }.first ?? .auto
            let options = OpenOptions(writable: words[words.startIndex + 2] == "rw", locking: locking, inactive: words.contains("inactive"))
            blockImages[nextHandle] = try BlockImage.open(path, options: options)
            defer { nextHandle += 1 }
            return "ok \(nextHandle)"
        case ("reopen", let image?) where words.count == 3:
            try image.reopen(writable: words.last == "rw")
        case ("activate", let image?):
            try image.activate()
        case ("inactivate", let image?):
            try image.inactivate()
        case ("read", let image?) where words.count == 4:
            guard let offset = Int64(words[words.startIndex + 2]), let count = Int(words[words.startIndex + 3]) else { return "err usage" }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
            defer { buffer.deallocate() }
            try image.read(at: offset, into: buffer)
        case ("write", let image?) where words.count == 5:
            guard let offset = Int64(words[words.startIndex + 2]), let count = Int(words[words.startIndex + 3]),
                  let byte = UInt8(words[words.startIndex + 4]) else { return "err usage" }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: byte)
            try image.write(at: offset, from: UnsafeRawBufferPointer(buffer))
            try image.flush()
        case ("flush", let image?):
            try image.flush()
        case ("lease", let image?):
            let lease = image.lease
            return "ok \(lease?.mode.map { "\($0)" } ?? "none")\(lease?.loss != nil ? " lost" : "")"
        default:
            return nil
        }
        return "ok"
    } catch {
        return blockReply(error)
    }
}

var blockImages: [Int: BlockImage] = [:]
var images: [Int: LockedImageFile] = [:]
var nextHandle = 0
var pending: Task<Void, Never>?

reply("ready")
while let line = readLine() {
    let words = line.split(separator: " ")[...]
    guard let command = words.first else { continue }
    if let answer = blockCommand(words) {
        reply(answer)
        continue
    }
    let image = words.count > 1 ? Int(words[1]).flatMap { images[$0] } : nil
    let kind: LockKind? = words.count > 2 ? LockKind.allCases.first { "\($0)" == words[2] } : nil
    do throws(LockingError) {
        switch (command, image, kind) {
        case ("open", _, _) where words.count >= 3:
            let mode = words.count > 3 ? LockingMode(rawValue: String(words[3])) ?? .auto : .auto
            let opened = try LockedImageFile(path: String(words[1]), writable: words[2] == "rw", mode: mode)
            opened.locks.decision.warnings.forEach { warn($0) }
            images[nextHandle] = opened
            reply("ok \(nextHandle)")
            nextHandle += 1
        case ("perms", let image?, _) where words.count == 4:
            guard let held = permissions(words[2]), let unshared = permissions(words[3]) else { reply("err usage bad permission list"); continue }
            try image.locks.setPermissions(PermissionRequest(held: held, unshared: unshared))
            reply("ok")
        case ("lock", let image?, let kind?):
            try image.locks.transaction.acquire(kind, deadline: deadline(words, at: 3))
            reply("ok")
        case ("trylock", let image?, let kind?):
            reply(try image.locks.transaction.tryAcquire(kind) == .acquired ? "ok" : "wouldblock")
        case ("asynclock", let image?, let kind?):
            let wait = deadline(words, at: 3)
            let lock = image.locks.transaction
            pending = Task.detached {
                do throws(LockingError) {
                    try await lock.acquire(kind, deadline: wait)
                    reply("async ok")
                } catch {
                    reply("async " + errorReply(error))
                }
            }
            reply("started")
        case ("cancel", _, _):
            pending?.cancel()
            reply("ok")
        case ("unlock", let image?, let kind?):
            try image.locks.transaction.release(kind)
            reply("ok")
        case ("status", let image?, _):
            let status = image.locks.transaction.status
            reply("ok \(status.kind.map { "\($0)" } ?? "unlocked") \(status.depth)")
        case ("close", _, _) where words.count == 2:
            images[Int(words[1]) ?? -1] = nil
            blockImages[Int(words[1]) ?? -1] = nil
            reply("ok")
        default:
            reply("err usage \(line)")
        }
    } catch {
        reply(errorReply(error))
    }
}
