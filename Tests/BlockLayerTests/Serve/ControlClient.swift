// ControlClient: a client of `blk serve --control`, one JSON line out and one in, on a socket
// whose reads and writes time out (RawNBDClient's), so a server that never answers fails the test.
import Foundation
import Testing

final class ControlClient {
    private let socket: RawNBDClient

    init(_ path: String) throws { socket = try RawNBDClient(path) }

    /// Sends `bytes` as they are (a line, part of one, or garbage).
    func send(_ bytes: [UInt8]) throws { try socket.send(bytes) }

    /// The next line the server sends, parsed.
    func answer() throws -> [String: Any] {
        var line: [UInt8] = []
        while true {
            guard let byte = try socket.receive(1) else { throw TestFailure("the control socket closed after \(line.count) bytes") }
            if byte[0] == UInt8(ascii: "\n") { break }
            line += byte
        }
        guard let object = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
            throw TestFailure("not a JSON object: \(String(decoding: line, as: UTF8.self))")
        }
        return object
    }

    /// Runs `command`: its answer.
    func execute(_ command: String) throws -> [String: Any] {
        try send(Array(#"{"execute": "\#(command)"}"#.utf8) + [UInt8(ascii: "\n")])
        return try answer()
    }

    /// Runs `command`, which must succeed: what it returned.
    func returned(_ command: String) throws -> [String: Any] {
        let answer = try execute(command)
        guard let value = answer["return"] as? [String: Any] else { throw TestFailure("\(command): \(answer)") }
        return value
    }

    /// `status`'s first export.
    func firstExport() throws -> [String: Any] {
        let exports = try returned("status")["exports"] as? [[String: Any]]
        return try #require(exports?.first)
    }

    /// Whether the server has closed the control connection.
    func isClosedByServer() -> Bool { socket.isClosedByServer() }
}

extension [String: Any] {
    /// An error answer's class and description; nil for a return.
    var controlError: (errorClass: String, desc: String)? {
        guard let error = self["error"] as? [String: Any], let errorClass = error["class"] as? String,
              let desc = error["desc"] as? String else { return nil }
        return (errorClass, desc)
    }
}
