// StateError: the one error type of the device-state store. The code tells a script what went
// wrong (interface.md §3 maps each to an exit code); the key problems are three codes of their
// own so that a wrong key is never reported as corruption, nor corruption as a wrong key.
import BlockLayer
import BlockLocking
import FoundationEssentials
import Glibc

public struct StateError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The state is encrypted and no key was given.
        public static let keyRequired = Code("key-required")
        /// A key was given but the state is not encrypted.
        public static let keyNotNeeded = Code("key-not-needed")
        /// The key given does not open the state (its key-check value differs), or is unusable.
        public static let wrongKey = Code("wrong-key")
        /// Stored bytes fail their checksum or authentication, or the store's structure is damaged.
        public static let corrupt = Code("corrupt")
        /// The disk holds data that is not a state store (and is not all zeroes).
        public static let notAStore = Code("not-a-store")
        /// The store was written by a newer format version.
        public static let unsupported = Code("unsupported")
        /// No blob of that name.
        public static let notFound = Code("not-found")
        /// A name, size or argument that cannot be stored.
        public static let invalidRequest = Code("invalid-request")
        /// The blob does not fit beside the live data.
        public static let noRoom = Code("no-room")
        /// Something else holds what is needed (a running swtpm on its folder); retrying may succeed.
        public static let busy = Code("busy")
        /// The image is open inactive (migration hand-over): activate it first.
        public static let inactive = Code("inactive")
        /// The block layer failed; `block` says how (lock conflicts and timeouts included).
        public static let block = Code("block")
    }

    public var code: Code
    public var message: String
    /// The block layer's error, for `.block`: its code, QEMU's words and the holders.
    public var block: BlockError?
    public var file: String
    public var line: Int

    public init(_ code: Code, _ message: String, block: BlockError? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.block = block
        self.file = file
        self.line = line
    }

    public init(_ block: BlockError, file: String = #fileID, line: Int = #line) {
        self.init(.block, block.message, block: block, file: file, line: line)
    }

    public init(_ locking: LockingError, file: String = #fileID, line: Int = #line) {
        self.init(BlockError(locking, file: file, line: line), file: file, line: line)
    }

    /// The message and, for lock conflicts, the holders, one per line.
    public var description: String { block?.description ?? message }

    /// Why a file operation of FileManager or Data failed, in strerror's words when it says
    /// (FoundationEssentials has no localizedDescription, and its errors print as dumps).
    public static func reason(_ error: any Error) -> String {
        let posix = (error as? CocoaError)?.underlying as? POSIXError ?? error as? POSIXError
        return posix.map { String(cString: strerror($0.code.rawValue)) } ?? "\(error)"
    }
}
