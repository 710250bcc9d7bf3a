// blk-state-fixture: a device that keeps its state store open, for the tests that need a
// long-running writer (commits in a loop while readers verify, kill -9 mid-commit) or both
// sides of a migration hand-over. What one process does to itself proves nothing about others.
//
// Protocol: one command per line on stdin, one answer per line on stdout ("ready" first).
//   open PATH writer|reader|inactive [KEYFILE] [locking=off]  → ok  (locking=off: no OFD locks,
//                             as on a host that does not share this one's kernel; leases still apply)
//   put NAME SIZE SEED      → ok GENERATION     (the blob is Payload(seed, size))
//   loop NAME SIZE COUNT    → "committed SEED" after each commit (seeds 1…; COUNT 0: for ever),
//                             then "ok done"
//   get NAME                → ok SEED           (the blob checked against its own seed)
//   verify                  → ok GENERATION BLOBS
//   increment PATH COUNT    → "incremented VALUE" per increment of the decimal blob "counter",
//                             each a one-shot writer (lock, open, read, commit, close), then "ok done"
//   inactivate · activate · close → ok
// Failures answer "err CODE MESSAGE", newlines in MESSAGE written as "\n".
import BlockLocking
import DeviceState
import Glibc
import Posix
import SystemPackage

func reply(_ line: String) {
    _ = Array((line + "\n").utf8).withUnsafeBytes { FileDescriptor.standardOutput.writeFully($0) }
}

func errorReply(_ error: StateError) -> String {
    "err \(error.block?.code.name ?? error.code.name) " + error.description.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\\n")
}

/// A blob that says which version it is: the seed in its first 8 bytes, then bytes of a
/// generator started from the seed — so a reader can tell a whole version from a torn mix.
enum Payload {
    static func make(seed: UInt64, size: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(size, 8))
        for index in 0..<8 { bytes[index] = UInt8(truncatingIfNeeded: seed >> UInt64(8 * index)) }
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for index in 8..<bytes.count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            bytes[index] = UInt8(truncatingIfNeeded: state)
        }
        return bytes
    }

    static func seed(of bytes: [UInt8]) -> UInt64? {
        guard bytes.count >= 8 else { return nil }
        let seed = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << UInt64(8 * $1) }
        return make(seed: seed, size: bytes.count) == bytes ? seed : nil
    }
}

var store: StateStore?
reply("ready")
while let line = readLine() {
    let words = line.split(separator: " ").map(String.init)
    guard let command = words.first else { continue }
    // A test that goes on after a failed open gets an answer, not a crashed fixture.
    if !["open", "increment", "close"].contains(command) && store == nil {
        reply("err no store is open")
        continue
    }
    do throws(StateError) {
        switch command {
        case "open" where words.count >= 3:
            let role: StateStore.Role = words[2] == "writer" ? .writer : words[2] == "inactive" ? .inactive : .reader
            let locking: LockingMode = words.contains("locking=off") ? .off : .auto
            let rest = words.dropFirst(3).filter { $0 != "locking=off" }
            let credential = try rest.first.map { (path) throws(StateError) in try StateCredential.keyFile(atPath: path) }
            store = try StateStore.open(words[1], role: role, credential: credential, options: .init(locking: locking, timeout: .seconds(20)))
            reply("ok")
        case "put" where words.count == 4:
            let record = try store!.put(words[1], Payload.make(seed: UInt64(words[3])!, size: Int(words[2])!))
            reply("ok \(record.generation)")
        case "loop" where words.count == 4:
            let count = UInt64(words[3])!
            var seed: UInt64 = 1
            while count == 0 || seed <= count {
                try store!.put(words[1], Payload.make(seed: seed, size: Int(words[2])!))
                reply("committed \(seed)")
                seed += 1
            }
            reply("ok done")
        case "get" where words.count == 2:
            let bytes = try store!.get(words[1])
            if let seed = Payload.seed(of: bytes) { reply("ok \(seed)") } else { reply("err torn blob '\(words[1])' is no version") }
        case "increment" where words.count == 3:
            for _ in 0..<Int(words[2])! {
                let value = try StateStore.withWriter(words[1], options: .init(timeout: .seconds(60))) { (store) throws(StateError) -> Int in
                    var current = 0
                    do throws(StateError) {
                        current = Int(String(decoding: try store.get("counter"), as: UTF8.self))!
                    } catch where error.code == .notFound {}
                    try store.put("counter", Array(String(current + 1).utf8))
                    return current + 1
                }
                reply("incremented \(value)")
            }
            reply("ok done")
        case "verify":
            let result = try store!.verify()
            reply("ok \(result.generation ?? 0) \(result.blobCount)")
        case "inactivate":
            try store!.inactivate()
            reply("ok")
        case "activate":
            try store!.activate()
            reply("ok")
        case "close":
            try store?.close()
            store = nil
            reply("ok")
        default:
            reply("err usage unknown command: \(line)")
        }
    } catch {
        reply(errorReply(error))
    }
}
