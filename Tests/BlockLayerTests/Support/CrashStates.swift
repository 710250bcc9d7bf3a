// CrashStates: what a power cut during a journaled operation could leave on disk (SQLite's
// crash VFS and CrashMonkey in the spirit): from the image before and the write journal
// (WriteJournalDriver, `--record-writes`), everything up to some completed flush, plus every
// prefix and every single omission of the writes after it, and each of those writes torn after
// its first, middle or last-but-one 512-byte sector.
import Foundation

enum CrashStates {
    struct Write { var offset: Int; var bytes: Data }

    /// The journal as epochs: the writes between one completed flush and the next.
    static func epochs(_ journal: Data) -> [[Write]] {
        var epochs: [[Write]] = [[]]
        var position = journal.startIndex
        func number(_ at: Int) -> Int { journal[at..<at + 8].reduce(0) { $0 << 8 | Int($1) } }
        while position + 17 <= journal.endIndex {
            let kind = journal[position]
            let offset = number(position + 1), length = number(position + 9)
            position += 17
            if kind == UInt8(ascii: "F") {
                epochs.append([])
            } else {
                epochs[epochs.count - 1].append(Write(offset: offset, bytes: journal[position..<position + length]))
                position += length
            }
        }
        return epochs
    }

    static func apply(_ writes: some Sequence<Write>, to image: inout Data) {
        for write in writes {
            if image.count < write.offset + write.bytes.count { image.append(Data(count: write.offset + write.bytes.count - image.count)) }
            image.replaceSubrange(write.offset..<write.offset + write.bytes.count, with: write.bytes)
        }
    }

    /// Every state a power cut during the journaled operation could leave, labelled.
    static func enumerate(base: Data, journal: Data) -> [(String, Data)] {
        var states: [(String, Data)] = []
        var durable = base
        for (epoch, writes) in epochs(journal).enumerated() {
            for prefix in 0...writes.count {
                var state = durable
                apply(writes[0..<prefix], to: &state)
                states.append(("after flush \(epoch), first \(prefix) of \(writes.count) writes", state))
            }
            // A write torn at a sector boundary: the writes before it, and its first sectors.
            for (index, write) in writes.enumerated() where write.bytes.count > 512 {
                let sectors = write.bytes.count / 512
                for kept in Set([1, sectors / 2, sectors - 1]) where kept > 0 && kept < sectors {
                    var state = durable
                    apply(writes[0..<index], to: &state)
                    apply([Write(offset: write.offset, bytes: write.bytes.prefix(kept * 512))], to: &state)
                    states.append(("after flush \(epoch), write #\(index + 1) torn after \(kept) of \(sectors) sectors", state))
                }
            }
            if writes.count > 1 {
                for omitted in writes.indices {
                    var state = durable
                    apply(writes.enumerated().filter { $0.offset != omitted }.map(\.element), to: &state)
                    states.append(("after flush \(epoch), all \(writes.count) writes but #\(omitted + 1)", state))
                }
            }
            apply(writes, to: &durable)
        }
        var seen = Set<Data>()
        return states.filter { seen.insert($0.1).inserted }
    }


    /// At most `count` of `states`, evenly spread, the first and the last always among them.
    static func sample<State>(_ states: [State], count: Int) -> [State] {
        guard states.count > count, count > 1 else { return states }
        return (0..<count).map { states[$0 * (states.count - 1) / (count - 1)] }
    }
}
