// Crash states of state-store commits (issue 6's crash-state enumeration, for the store): a
// commit runs with its writes and flushes journaled (`--record-writes`, WriteJournalDriver);
// from the image before and the journal, every state a power cut could leave is rebuilt
// (CrashStates) —
// everything up to some completed flush, plus every prefix and every single omission of the
// writes after it, and each of them torn after its first, middle or last-but-one sector — and
// each must open showing the old or the new version of every blob (or
// "not found" for a blob that did not exist before), and for qcow2 pass `blk check` (leaks
// allowed).
import Foundation
import Testing

@Suite("device-state store: crash states of commits")
struct StateCrashTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    func blob(_ seed: Int, _ size: Int) -> Data { Data((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ seed &* 7) }) }

    @Test("new blob, replaced blob (extent and inline), remove, rekey", arguments: ["raw", "qcow2"])
    func commits(format: String) throws {
        let image = format == "raw" ? try scratch.rawImage(bytes: 2 << 20) : try scratch.qcow2Image(size: "2M")
        let key = scratch.directory + "/key"
        try scratch.write(key, Data((0..<32).map { UInt8(truncatingIfNeeded: $0 &* 13) }))
        func file(_ data: Data) throws -> String {
            let path = scratch.directory + "/input-\(UUID().uuidString)"
            try scratch.write(path, data)
            return path
        }
        var current: [String: Data] = ["permall": blob(1, 70_000), "volatile": blob(2, 3000)]
        for (name, bytes) in current.sorted(by: { $0.key < $1.key }) {
            #expect(try blk("state", "put", "-f", format, image, name, try file(bytes)).status == 0)
        }
        var encrypted = false
        // Each operation: its label, its command, the blobs it writes, the blob it removes.
        let operations: [(String, [String], [String: Data], String?)] = [
            ("replace an extent blob", ["put", "permall", try file(blob(3, 70_000))], ["permall": blob(3, 70_000)], nil),
            ("replace an inline blob", ["put", "volatile", try file(blob(4, 3000))], ["volatile": blob(4, 3000)], nil),
            ("add a blob", ["put", "savestate", try file(blob(5, 40_000))], ["savestate": blob(5, 40_000)], nil),
            ("remove a blob", ["remove", "volatile"], [:], "volatile"),
            ("rekey: encrypt", ["rekey", "--new-key-file", key], [:], nil),
        ]
        var statesChecked = 0
        for (label, arguments, changes, removed) in operations {
            let base = try Data(contentsOf: URL(fileURLWithPath: image))
            let journal = scratch.directory + "/journal"
            try scratch.write(journal, Data())
            let ran = try run(blkPath, ["state", arguments[0], "-f", format, "--record-writes", journal]
                              + (encrypted ? ["--key-file", key] : []) + [image] + arguments.dropFirst())
            #expect(ran.status == 0, "\(label): \(ran)")
            var after = current.merging(changes) { $1 }
            if let removed { after[removed] = nil }
            let states = CrashStates(base: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)))
            #expect(states.count >= 4, "\(label): \(states.count) states")
            let probe = scratch.directory + "/crashed.img"
            for state in states.states {
                let stateLabel = state.label
                try states.image(state).write(to: URL(fileURLWithPath: probe))
                for name in Set(current.keys).union(after.keys).sorted() {
                    let out = scratch.directory + "/out"
                    try? FileManager.default.removeItem(atPath: out)
                    // Before a rekey the state may be plain or (once the switch is durable) encrypted.
                    var read = try run(blkPath, ["state", "get", "-f", format] + (encrypted ? ["--key-file", key] : []) + [probe, name, out])
                    if label.hasPrefix("rekey") && read.status == 77 {
                        read = try run(blkPath, ["state", "get", "-f", format, "--key-file", key, probe, name, out])
                    }
                    let got = read.status == 0 ? FileManager.default.contents(atPath: out) : nil
                    let allowed: [Data?] = [current[name], after[name]]
                    #expect(allowed.contains(got) && (read.status == 0 || read.status == 66),
                            "\(format), \(label), \(stateLabel): blob '\(name)' reads \(read.status) \(got?.count ?? -1) bytes: \(read.stderr)")
                }
                if format == "qcow2" {
                    let checked = try run(blkPath, ["check", probe])
                    #expect(checked.status == 0 || checked.status == 3, "\(label), \(stateLabel): \(checked)")
                }
                statesChecked += 1
            }
            current = after
            if label.hasPrefix("rekey") { encrypted = true }
        }
        print("\(format): \(statesChecked) crash states checked")
    }
}
