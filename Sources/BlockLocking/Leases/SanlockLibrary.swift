// SanlockLibrary: libsanlock_client.so.1, loaded at run time so that BlockLayer builds and runs
// without sanlock, and sanlock's return codes in words.
import CSanlock
import Glibc
import SystemPackage

package enum SanlockLibrary {
    /// Loads the client library, or says what to install.
    static func load() throws(LockingError) {
        guard blk_sanlock_load() == 0 else {
            throw LockingError(.leaseUnavailable, "image leases need sanlock's client library, which could not be loaded (\(String(cString: blk_sanlock_load_error()))): install it (Debian: apt-get install libsanlock-client1; the daemon is the package sanlock)")
        }
    }

    /// sanlock's negative return codes: -errno from the daemon or the client, or SANLK_* (≤ -200).
    static func words(_ result: Int32) -> String {
        if result > -200 { return "\(Errno(rawValue: -result))" }
        return String(cString: blk_sanlock_strerror(result))
    }

    /// The daemon's socket, as the client library finds it.
    static var socketPath: String {
        (getenv("SANLOCK_RUN_DIR").map { String(cString: $0) } ?? "/run/sanlock") + "/sanlock.sock"
    }

    /// The error for a daemon that does not answer, saying what to start.
    static func daemonUnreachable(_ result: Int32, doing what: String) -> LockingError {
        LockingError(.leaseUnavailable, "Could not \(what): the sanlock daemon does not answer on \(socketPath) (\(words(result))): start it (systemctl start sanlock), or set SANLOCK_RUN_DIR to the run directory of the daemon to use")
    }

    /// Results that mean no daemon is listening (ENOENT also means "no such lockspace" from a
    /// daemon that answered, so it counts only when the socket is missing).
    static func isDaemonMissing(_ result: Int32) -> Bool {
        [-ECONNREFUSED, -ECONNRESET, -EPIPE].contains(result) || (result == -ENOENT && access(socketPath, F_OK) != 0)
    }

    /// Copies `text` into a fixed C char array (NUL-padded; sanlock's names need no terminator
    /// at 48 bytes, paths do).
    package static func copy<T>(_ text: String, into field: inout T) {
        withUnsafeMutableBytes(of: &field) { bytes in
            bytes.initializeMemory(as: UInt8.self, repeating: 0)
            for (index, byte) in text.utf8.prefix(bytes.count - 1).enumerated() { bytes[index] = byte }
        }
    }

    static func string<T>(_ field: T) -> String {
        withUnsafeBytes(of: field) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
