// ServedExport: a `blk serve` process under test — started, ready once it says where it
// listens (a line on stdout, no sleeping), and stopped with SIGTERM, which must end it with 0.
// RawNBDClient: a socket that speaks bytes we choose, for the malformed and vanishing clients
// the real tools never are.
import Foundation
import Glibc
import Testing

final class ServedExport {
    let process: LineProcess
    let socket: String
    /// The export's URI for qemu tools.
    let uri: String

    /// Starts `blk serve` on `images` with a socket `socketName` in `scratch` (or, with `tcp`, on
    /// a free loopback port), plus `options`, in `environment` (this process's by default).
    init(_ scratch: Scratch, _ images: [String], options: [String] = [], exportName: String = "", tcp: Bool = false,
         socketName: String = "nbd.sock", environment: [String: String]? = nil) throws {
        socket = scratch.directory + "/" + socketName
        process = try LineProcess(blkPath, ["serve"] + (tcp ? ["--bind", "127.0.0.1:0"] : ["--socket", socket]) + options + images,
                                  environment: environment)
        let line = try process.nextLine(within: 30)
        if tcp {
            guard line.hasPrefix("listening on 127.0.0.1:"), let port = Int(line.dropFirst("listening on 127.0.0.1:".count)), port > 0 else {
                throw TestFailure("blk serve said '\(line)'; stderr: \(process.stderr)")
            }
            uri = "nbd://127.0.0.1:\(port)/\(exportName)"
        } else {
            guard line == "listening on unix:\(socket)" else { throw TestFailure("blk serve said '\(line)'; stderr: \(process.stderr)") }
            uri = "nbd+unix:///\(exportName)?socket=\(socket)"
        }
    }

    /// SIGTERM, then the exit status (which a clean stop makes 0).
    func stop() throws -> Int32 {
        kill(process.pid, SIGTERM)
        guard let status = process.exitStatus(within: 30) else {
            process.kill9()
            throw TestFailure("blk serve did not stop within 30 s of SIGTERM")
        }
        return status
    }

    deinit {
        if process.child.isRunning { process.kill9() }
    }
}

/// A client socket on a Unix path, with every read and write bounded by a timeout.
final class RawNBDClient {
    let descriptor: Int32

    init(_ path: String) throws {
        descriptor = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw TestFailure("socket: \(errno)") }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { path.utf8CString.withUnsafeBytes($0.copyMemory) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw TestFailure("connect \(path): \(errno)") }
    }

    deinit { close(descriptor) }

    func send(_ bytes: [UInt8]) throws {
        let sent = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else { throw TestFailure("send: \(sent), errno \(errno)") }
    }

    /// Exactly `count` bytes, or nil at the end of the stream.
    func receive(_ count: Int) throws -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let got = bytes.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress! + filled, count - filled, 0) }
            if got == 0 { return nil }
            guard got > 0 else { throw TestFailure("recv: errno \(errno)") }
            filled += got
        }
        return bytes
    }

    /// Whether the server has closed the connection: a read finds the end (or a reset).
    func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        while true {
            let got = recv(descriptor, &byte, 1, 0)
            if got == 0 || (got < 0 && errno == ECONNRESET) { return true }
            if got < 0 { return false } // the timeout: still open
        }
    }

    /// The greeting, then fixed newstyle without zero padding.
    func handshake() throws {
        guard let greeting = try receive(18), greeting[0..<8] == ArraySlice("NBDMAGIC".utf8) else { throw TestFailure("no greeting") }
        try send(bigEndian(UInt32(3)))
    }

    /// NBD_OPT_GO for the default export, its replies read up to the ACK.
    func go() throws {
        let type = try option(7, data: bigEndian(UInt32(0)) + bigEndian(UInt16(0)))
        guard type == 1 else { throw TestFailure("NBD_OPT_GO refused: \(type)") }
    }

    /// Sends an option and reads its replies up to the last: an ACK (1) or an error (bit 31).
    func option(_ option: UInt32, data: [UInt8]) throws -> UInt32 {
        try send(bigEndian(UInt64(0x4948_4156_454f_5054)) + bigEndian(option) + bigEndian(UInt32(data.count)) + data)
        while true {
            guard let header = try receive(20) else { throw TestFailure("closed during option \(option)") }
            let type = header[12..<16].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let length = Int(header[16..<20].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            _ = try receive(length)
            if type == 1 || type >= 1 << 31 { return type }
        }
    }

    /// A request header.
    func request(command: UInt16, flags: UInt16 = 0, cookie: UInt64, offset: UInt64, length: UInt32) throws {
        try send(bigEndian(UInt32(0x2560_9513)) + bigEndian(flags) + bigEndian(command) + bigEndian(cookie) + bigEndian(offset) + bigEndian(length))
    }

    /// A simple reply's error and cookie.
    struct SimpleReply: Equatable {
        var error: UInt32
        var cookie: UInt64
    }

    func simpleReply() throws -> SimpleReply {
        guard let reply = try receive(16) else { throw TestFailure("closed before the reply") }
        return SimpleReply(error: reply[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) },
                           cookie: reply[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    /// Ends the connection as a client that died would: both directions, at once.
    func hangUp() { shutdown(descriptor, Int32(SHUT_RDWR)) }
}

func bigEndian<Value: FixedWidthInteger>(_ value: Value) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian) { Array($0) }
}

/// A run of an image's map, as `qemu-img map --output=json` prints it, without what differs by
/// where it is read from (host offsets, depth).
struct MapRun: Equatable, CustomStringConvertible {
    var start: Int
    var length: Int
    var data: Bool
    var zero: Bool
    var description: String { "\(start)+\(length)\(data ? " data" : "")\(zero ? " zero" : "")" }

    /// The runs of qemu-img map's JSON, neighbours of the same kind merged.
    static func runs(ofJSON text: String) throws -> [MapRun] {
        guard let entries = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] else {
            throw TestFailure("not a map: \(text)")
        }
        var runs: [MapRun] = []
        for entry in entries {
            let run = MapRun(start: entry["start"] as! Int, length: entry["length"] as! Int, data: entry["data"] as! Bool, zero: entry["zero"] as! Bool)
            if let last = runs.last, last.data == run.data, last.zero == run.zero, last.start + last.length == run.start {
                runs[runs.count - 1].length += run.length
            } else {
                runs.append(run)
            }
        }
        return runs
    }
}
