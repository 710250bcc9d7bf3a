// StateError: the one error type of the device-state store. The code tells a script what went
// wrong (interface.md §3 maps each to an exit code); the key problems are three codes of their
// own so that a wrong key is never reported as corruption, nor corruption as a wrong key.
import BlockLayer
import BlockLocking
import FoundationEssentials
import Glibc

/// The one error of the state store: a code a script can switch on, with the key problems
/// apart from damage, and the block layer's error behind a failed image operation.
public struct StateError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is; `blk` maps each to an exit code (interface.md §3).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The code's stable name ("wrong-key", "corrupt"): what scripts and JSON output see.
        public let name: String
        /// An extensible struct, not a frozen enum, so a new kind of failure breaks no caller's
        /// switch.
        public init(_ name: String) { self.name = name }
        /// The stable name, as JSON output prints it.
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

    /// What kind of failure, for the caller to act on: ask for a key, report damage, retry.
    public var code: Code
    /// What went wrong and what to do, naming the image and the blob.
    public var message: String
    /// The block layer's error, for `.block`: its code, QEMU's words and the holders.
    public var block: BlockError?
    /// Where the error was thrown (#fileID), for debugging.
    public var file: String
    /// The line it was thrown at.
    public var line: Int

    /// A failure of the store itself, or (with `block`) of the image under it.
    public init(_ code: Code, _ message: String, block: BlockError? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.block = block
        self.file = file
        self.line = line
    }

    /// Wraps a block-layer failure, keeping its words and its error (with the holders of a lock).
    public init(_ block: BlockError, file: String = #fileID, line: Int = #line) {
        self.init(.block, block.message, block: block, file: file, line: line)
    }

    /// Wraps a locking failure (a transaction lock not had in time), keeping its words and holders.
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
