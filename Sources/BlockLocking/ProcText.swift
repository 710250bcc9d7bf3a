// ProcText: /proc text split on its bytes. /proc/locks, fdinfo and mountinfo are ASCII, and
// splitting them as Characters pays grapheme breaking on every byte: on the lock-holder scan of
// every `blk info`, that was a tenth of the command's instructions.

extension Substring {
    /// The pieces between bytes that `isSeparator` picks, empty pieces left out.
    func splitBytes(where isSeparator: (UInt8) -> Bool) -> [Substring] {
        utf8.split(whereSeparator: isSeparator).map { Substring($0) }
    }

    /// The lines, without their line feeds.
    var byteLines: [Substring] { splitBytes { $0 == UInt8(ascii: "\n") } }

    /// The words between runs of spaces and tabs.
    var byteFields: [Substring] { splitBytes { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") } }
}
