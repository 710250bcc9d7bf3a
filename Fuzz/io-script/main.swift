// libFuzzer target: an input is a `blk io` script, one command per line, as `-c` takes them.
// Parsing must return a step or an error for anything; a parsed step must print back to
// something that parses to the same step (so the parser has no hidden state).
import BlockGraph
import BlockIOScript
import FuzzSupport

runFuzzer { data, size in
    guard let data else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        _ = parseByteCount(String(line))
        guard case .success(let step) = IOCommandStep.parse(String(line)) else { continue }
        guard case .success(let again) = IOCommandStep.parse(step.commandText), again == step else {
            fatalError("\(line) parsed to \(step), whose text \(step.commandText) does not parse back to it")
        }
    }
    return 0
}
