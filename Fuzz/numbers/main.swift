// libFuzzer target: an input is lines of text, each given to the number parsers the command line
// and `blk io` scripts share — sizes and offsets (parseByteCount), waits in seconds
// (`--timeout`) and milliseconds (`sleep`), and whole io steps. Each must return a value inside
// its documented bounds or refuse, for any text: never trap, never wrap.
import BlockGraph
import BlockIOScript
import FuzzSupport

let maximumNanoseconds = Int64(maximumWaitSeconds) * 1_000_000_000

runFuzzer { data, size in
    guard let data else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
        if let bytes = parseByteCount(line) {
            precondition(bytes >= 0, "\(line) parsed to a negative size \(bytes)")
            if let plain = Int64(line) { precondition(plain == bytes, "\(line) parsed to \(bytes), not \(plain)") }
        }
        if let nanoseconds = parseSeconds(line) {
            precondition((0...maximumNanoseconds).contains(nanoseconds), "\(line) parsed to \(nanoseconds) ns")
        }
        if let milliseconds = parseMilliseconds(line) {
            precondition((0...Int64(maximumWaitSeconds) * 1000).contains(milliseconds), "\(line) parsed to \(milliseconds) ms")
        }
        // A step that makes a buffer makes one of at most the bound, whatever its numbers.
        switch IOCommandStep.parse(line) {
        case .success(.read(_, let count, _)), .success(.write(_, let count, .pattern)), .success(.write(_, let count, .compressed)):
            precondition((0...IOCommandStep.maximumRequestBytes).contains(count), "\(line) asks for a buffer of \(count) bytes")
        case .success(.sleep(let milliseconds)):
            precondition(milliseconds <= Int64(maximumWaitSeconds) * 1000, "\(line) sleeps \(milliseconds) ms")
        default:
            break
        }
    }
    return 0
}
