// LockHolder: a process that holds locks on an image, with what its locks mean in words.

/// A process holding locks on an image, or (pid nil) locks this host cannot attribute.
public struct LockHolder: Sendable, Hashable {
    /// nil when the holder cannot be seen: its /proc entry is unreadable, or it is on another host.
    public var pid: Int32?
    /// /proc/PID/comm: the program name, cut to 15 characters by the kernel.
    public var program: String?
    /// The holder's locks on the image, from which its meanings are read.
    public var locks: [LockRecord]
    /// Why the holder is unknown, when it is.
    public var visibilityNote: String?

    /// Usually made by a scan; by hand for tests and for holders named by other means.
    public init(pid: Int32?, program: String?, locks: [LockRecord], visibilityNote: String? = nil) {
        self.pid = pid
        self.program = program
        self.locks = locks
        self.visibilityNote = visibilityNote
    }

    /// Whether this holder explains a byte found locked: bytes no holder covers are another host's.
    public func covers(byte: Int64) -> Bool { locks.contains { $0.covers(byte: byte) } }

    /// Each lock in words: "holds write", "does not share resize", "transaction lock exclusive".
    public var meanings: [String] {
        var words: [String] = []
        for lock in locks {
            for meaning in Self.meanings(of: lock) where !words.contains(meaning) { words.append(meaning) }
        }
        return words
    }

    static func meanings(of lock: LockRecord) -> [String] {
        let flavor = lock.family == "OFDLCK" ? "" : " (\(lock.family.lowercased()) lock)"
        guard let last = lock.lastByte else {
            return lock.firstByte == 0
                ? ["whole file \(lock.kind)\(flavor)"]
                : ["bytes \(lock.firstByte)… \(lock.kind)\(flavor)"]
        }
        guard last - lock.firstByte < 16 else { return ["bytes \(lock.firstByte)–\(last) \(lock.kind)\(flavor)"] }
        return (lock.firstByte...last).map { LockByte.meaning(of: $0, kind: lock.kind) + flavor }
    }

    /// "pid 4121 (qemu-system-x86): holds consistent read, write; does not share write".
    public var summary: String {
        let who: String
        if let pid {
            who = "pid \(pid) (\(program.map { escapingControlCharacters($0) } ?? "?"))"
        } else {
            who = "an unknown process" + (visibilityNote.map { " (\($0))" } ?? "")
        }
        return "\(who): \(Self.joinedMeanings(meanings))"
    }

    /// Groups meanings that share a verb: "holds consistent read, write; does not share write".
    public static func joinedMeanings(_ meanings: [String]) -> String {
        var groups: [(verb: String, objects: [String])] = []
        for meaning in meanings {
            let verb = ["does not share ", "holds "].first { meaning.hasPrefix($0) }
            if let verb, let index = groups.firstIndex(where: { $0.verb == verb }) {
                groups[index].objects.append(String(meaning.dropFirst(verb.count)))
            } else if let verb {
                groups.append((verb, [String(meaning.dropFirst(verb.count))]))
            } else {
                groups.append(("", [meaning]))
            }
        }
        return groups.map { $0.verb + $0.objects.joined(separator: ", ") }.joined(separator: "; ")
    }
}
