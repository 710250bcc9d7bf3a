// NBDOptionData: the data of the options that carry structure — the export and information
// requests of NBD_OPT_INFO and GO, the export and queries of the meta-context options. Every
// length is checked against what is left of the option's data, which the decoder has bounded.
import NIOCore

/// Option data that does not parse: a length reaching past the end, bytes left over. The server
/// answers NBD_REP_ERR_INVALID.
public struct NBDMalformedOption: Error, Sendable, Hashable {
    /// What is wrong, for logs.
    public var reason: String
    /// A malformed option, and why.
    public init(_ reason: String) { self.reason = reason }
}

/// Option data that names an export, first of all.
public protocol NBDExportOptionData {
    /// The export's name; empty for the default export.
    var exportName: String { get }
    /// Parses the option's data, every length checked against what is left.
    init(parsing data: ByteBuffer) throws(NBDMalformedOption)
}

/// The data of NBD_OPT_INFO and NBD_OPT_GO: which export, and which information items.
public struct NBDExportInfoRequest: NBDExportOptionData, Sendable, Hashable {
    /// The export's name; empty for the default export.
    public var exportName: String
    /// The items asked for, beyond NBD_INFO_EXPORT which is always sent.
    public var items: [NBDInfoType]

    /// Parses the data: a 32-bit name length, the name, a 16-bit count, that many 16-bit items.
    public init(parsing data: ByteBuffer) throws(NBDMalformedOption) {
        var data = data
        exportName = try data.readNBDString()
        guard let count = data.readInteger(as: UInt16.self) else { throw NBDMalformedOption("no count of information requests") }
        guard data.readableBytes == Int(count) * 2 else {
            throw NBDMalformedOption("\(count) information requests in \(data.readableBytes) bytes")
        }
        items = (0..<count).map { _ in NBDInfoType(rawValue: data.readInteger()!) }
    }
}

/// The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: an export and queries.
public struct NBDMetaContextRequest: NBDExportOptionData, Sendable, Hashable {
    /// The export's name.
    public var exportName: String
    /// The queries, each "namespace:leaf".
    public var queries: [String]

    /// Parses the data: a 32-bit name length and the name, a 32-bit count, that many queries
    /// each with a 32-bit length.
    public init(parsing data: ByteBuffer) throws(NBDMalformedOption) {
        var data = data
        exportName = try data.readNBDString()
        guard let count = data.readInteger(as: UInt32.self) else { throw NBDMalformedOption("no count of queries") }
        // Each query takes at least its 4-byte length: a larger count cannot be true.
        guard Int(count) <= data.readableBytes / 4 else { throw NBDMalformedOption("\(count) queries in \(data.readableBytes) bytes") }
        var queries: [String] = []
        for _ in 0..<count { queries.append(try data.readNBDString()) }
        guard data.readableBytes == 0 else { throw NBDMalformedOption("\(data.readableBytes) bytes after the queries") }
        self.queries = queries
    }
}

extension ByteBuffer {
    /// A string with its 32-bit length before it, the length checked against what is left; the
    /// spec's strings are UTF-8, and bytes that are not are refused rather than repaired (a
    /// repaired name could match an export the client did not name).
    mutating func readNBDString() throws(NBDMalformedOption) -> String {
        guard let length = readInteger(as: UInt32.self) else { throw NBDMalformedOption("no string length") }
        guard Int(length) <= readableBytes else { throw NBDMalformedOption("a string of \(length) bytes in \(readableBytes)") }
        guard let text = String(validating: readBytes(length: Int(length))!, as: UTF8.self) else {
            throw NBDMalformedOption("a string that is not UTF-8")
        }
        return text
    }
}
