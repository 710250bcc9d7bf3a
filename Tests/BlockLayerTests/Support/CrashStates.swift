// CrashStates: what a power cut during a journaled operation could leave on disk (SQLite's
// crash VFS and CrashMonkey in the spirit): from the image before and the write journal
// (WriteJournalDriver, `--record-writes`), everything up to some completed flush, plus every
// prefix and every single omission of the writes after it, and each of those writes torn after
// its first, middle or last-but-one 512-byte sector. States are recipes — which writes, in
// order, over the image before — and become images only when asked for: a scenario can have
// thousands of them on an image of megabytes.
import Foundation

struct CrashStates {
    struct Write { var offset: Int; var bytes: Data }

    /// One write of the journal as a state has it: whole, or only its first `keptBytes`.
    struct Piece: Hashable {
        var epoch: Int
        var index: Int
        var keptBytes: Int?
    }

    struct State {
        var label: String
        var pieces: [Piece]
        /// Exactly what the last completed flush made durable.
        var atFlush = false
    }

    let base: Data
    let epochs: [[Write]]
    /// Distinct states (two recipes applying the same writes are one), in journal order.
    let states: [State]

    init(base: Data, journal: Data) {
        self.base = base
        epochs = Self.epochs(journal)
        var states: [State] = []
        var durable: [Piece] = []
        for (epoch, writes) in epochs.enumerated() {
            let whole = writes.indices.map { Piece(epoch: epoch, index: $0) }
            for prefix in 0...writes.count {
                states.append(State(label: "after flush \(epoch), first \(prefix) of \(writes.count) writes", pieces: durable + whole[0..<prefix],
                                    atFlush: prefix == 0))
            }
            // A write torn at a sector boundary: the writes before it, and its first sectors.
            for (index, write) in writes.enumerated() where write.bytes.count > 512 {
                let sectors = write.bytes.count / 512
                for kept in Set([1, sectors / 2, sectors - 1]).sorted() where kept > 0 && kept < sectors {
                    states.append(State(label: "after flush \(epoch), write #\(index + 1) torn after \(kept) of \(sectors) sectors",
                                        pieces: durable + whole[0..<index] + [Piece(epoch: epoch, index: index, keptBytes: kept * 512)]))
                }
            }
            if writes.count > 1 {
                for omitted in writes.indices {
                    states.append(State(label: "after flush \(epoch), all \(writes.count) writes but #\(omitted + 1)",
                                        pieces: durable + whole.filter { $0.index != omitted }))
                }
            }
            durable += whole
        }
        var distinct: [State] = []
        var seen: [[Piece]: Int] = [:]
        for state in states {
            if let earlier = seen[state.pieces] {
                distinct[earlier].atFlush = distinct[earlier].atFlush || state.atFlush
            } else {
                seen[state.pieces] = distinct.count
                distinct.append(state)
            }
        }
        self.states = distinct
    }

    var count: Int { states.count }

    /// The image a state stands for.
    func image(_ state: State) -> Data {
        var image = base
        for piece in state.pieces {
            let write = epochs[piece.epoch][piece.index]
            let bytes = piece.keptBytes.map { write.bytes.prefix($0) } ?? write.bytes
            if image.count < write.offset + bytes.count { image.append(Data(count: write.offset + bytes.count - image.count)) }
            image.replaceSubrange(write.offset..<write.offset + bytes.count, with: bytes)
        }
        return image
    }

    /// Every state at a completed flush (where a step's last write became durable before the
    /// next step began), and of the rest at most `limit`, evenly spread, the last among them.
    func sample(_ limit: Int) -> [State] {
        guard states.count > limit, limit > 1 else { return states }
        let picked = Set((0..<limit).map { $0 * (states.count - 1) / (limit - 1) })
        return states.indices.filter { picked.contains($0) || states[$0].atFlush }.map { states[$0] }
    }

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
}
