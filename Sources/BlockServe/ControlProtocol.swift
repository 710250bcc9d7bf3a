// ControlProtocol: the control socket's messages (docs/serve.md, "Control socket"), modelled on
// QMP: a request is a JSON object `{"execute": COMMAND}` on one line; each is answered, in
// order, by one line: `{"return": VALUE}`, or `{"error": {"class": CLASS, "desc": TEXT}}` with
// QMP's classes `CommandNotFound` (a command this server does not have) and `GenericError`
// (anything else: not JSON, not such an object, a line over the limit, a command that failed).
// Keys are in kebab-case, as qemu-img and blk print JSON.
import FoundationEssentials

/// A command the control socket takes.
enum ControlCommand: String, Sendable, CaseIterable {
    case status, inactivate, activate, quit
}

/// A request line as sent.
struct ControlRequest: Decodable {
    var execute: String
}

/// An answer line.
enum ControlAnswer {
    case value(any Encodable & Sendable)
    case failure(class: String, desc: String)

    /// The answer to a failed command or a request that is not one.
    static func error(_ desc: String) -> ControlAnswer { .failure(class: "GenericError", desc: desc) }

    /// The line sent, newline included.
    var line: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data: Data?
        switch self {
        case .value(let value): data = try? encoder.encode(Returned(return: value))
        case .failure(let errorClass, let desc): data = try? encoder.encode(Failed(error: .init(class: errorClass, desc: desc)))
        }
        // Every value here encodes: strings, numbers, booleans and arrays of them.
        return Array(data!) + [UInt8(ascii: "\n")]
    }

    private struct Returned: Encodable {
        var `return`: any Encodable & Sendable
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(`return`, forKey: .return)
        }
        enum CodingKeys: String, CodingKey { case `return` }
    }

    private struct Failed: Encodable {
        struct Detail: Encodable {
            var `class`: String
            var desc: String
        }
        var error: Detail
    }
}

/// `{}`: the value of a command that returns nothing.
struct ControlEmpty: Encodable, Sendable {}

/// What `status` returns.
struct ServerStatus: Encodable, Sendable {
    var exports: [ExportStatus]
    /// Connections being served (not those waiting beyond --shared).
    var connections: Int
    var requestsInFlight: Int
    var requestsServed: Int
    var bytesRead: UInt64
    var bytesWritten: UInt64
    /// Of `bytesRead`, those sent from the image file with sendfile.
    var bytesSentFromFile: UInt64

    enum CodingKeys: String, CodingKey {
        case exports, connections
        case requestsInFlight = "requests-in-flight", requestsServed = "requests-served"
        case bytesRead = "bytes-read", bytesWritten = "bytes-written", bytesSentFromFile = "bytes-sent-from-file"
    }
}

/// One export in `status`.
struct ExportStatus: Encodable, Sendable {
    var name: String
    var image: String
    var format: String
    /// Left out if the size cannot be read.
    var size: UInt64?
    var readOnly: Bool
    /// Holds its permission locks (and lease): false on a migration destination until
    /// `activate`, and on a source after `inactivate`.
    var active: Bool
    /// Why writes fail since the lease was taken away; left out while it is held.
    var leaseLost: String?

    enum CodingKeys: String, CodingKey {
        case name, image, format, size, active
        case readOnly = "read-only", leaseLost = "lease-lost"
    }
}
