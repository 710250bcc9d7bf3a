// ImageOptions: the options every command that opens an image shares (interface.md §1), blk's
// and blk-serve's alike.
import ArgumentParser
import BlockLayer
import BlockLocking

// ArgumentParser's own allValueStrings and allValueDescriptions reach an enum's values through
// key paths and unspecialised generics: four lookups in the Swift runtime's conformance tables,
// each a scan of all of them, at every start of a command that opens an image. The same
// strings, said directly (no value has a description other than its name):
extension LockingMode: ExpressibleByArgument {
    /// The values help lists, in declaration order.
    public static var allValueStrings: [String] { allCases.map { $0.rawValue } }
    /// None: each value's description is its name.
    public static var allValueDescriptions: [String: String] { [:] }
}
extension CacheMode: ExpressibleByArgument {
    /// The values help lists, in declaration order.
    public static var allValueStrings: [String] { allCases.map { $0.rawValue } }
    /// None: each value's description is its name.
    public static var allValueDescriptions: [String: String] { [:] }
}
extension Preallocation: ExpressibleByArgument {}

extension FaultRule: ExpressibleByArgument {
    /// A rule in --inject-fault's syntax; nil (a usage error) for anything else.
    public init?(argument: String) { self.init(parsing: argument) }
}

package struct ImageOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "The image format (raw, qcow2); probed from the image when not given.")
    package var format: String?

    @Flag(name: [.customShort("r"), .customLong("read-only")], help: "Open read-only.")
    package var readOnly = false

    @Flag(name: [.customShort("U"), .customLong("force-share")], help: "Open read-only without keeping others from writing (QEMU's -U).")
    package var forceShare = false

    @Option(help: "auto: lock when OFD locks work; on: always; off: never.")
    package var locking: LockingMode = .auto

    @Option(help: "writeback (the page cache) or none (O_DIRECT).")
    package var cache: CacheMode = .writeback

    @Option(help: "Memory for qcow2 metadata (L2 tables and refcount blocks), e.g. 1M; default 4M.")
    package var cacheSize: ByteCount?

    @Option(help: ArgumentHelp("Make a request fail, for testing error paths: OP[@EVENT|@FIRST-LAST]:N[:eio|enospc][:always] — the Nth read, write or flush (during a step such as l2_update, or touching those file bytes) fails (repeatable; docs/block-layer.md).",
                               valueName: "rule"))
    package var injectFault: [FaultRule] = []

    @Option(help: ArgumentHelp("As --inject-fault, for the requests to a qcow2 image's external data file.", valueName: "rule"))
    package var injectDataFileFault: [FaultRule] = []

    @Option(help: ArgumentHelp("Append every write and flush under the format node to FILE, for crash-state tests.", valueName: "file"))
    package var recordWrites: String?

    @OptionGroup(title: "Leases across hosts") package var leases: LeaseConfigOptions

    package init() {}

    /// Only these options given, every other at its default as declared above: blk's short verbs
    /// parsed without ArgumentParser (blk's Support/ShortVerbs.swift) take no other. Set on a
    /// made value, not in an initializer, where Swift would make each wrapper anew with the
    /// value as its default instead of giving it the value.
    package static func given(format: String?, readOnly: Bool, forceShare: Bool) -> ImageOptions {
        var options = ImageOptions()
        options.format = format
        options.readOnly = readOnly
        options.forceShare = forceShare
        options.locking = .auto
        options.cache = .writeback
        options.cacheSize = nil
        options.injectFault = []
        options.injectDataFileFault = []
        options.recordWrites = nil
        options.leases = .unset
        return options
    }

    package func openOptions(writable: Bool) -> OpenOptions {
        var options = OpenOptions(format: format, writable: writable && !readOnly, forceShare: forceShare,
                                  locking: locking, cache: cache, metadataCacheBytes: cacheSize.map { Int($0.value) }, faults: injectFault,
                                  writeJournalPath: recordWrites, lease: leases.policy)
        options.dataFileFaults = injectDataFileFault
        return options
    }

    /// Opens `path`, printing the open's warnings; `writable` is what the command would like
    /// (-U without -r on a command that writes is refused by the open, in QEMU's words).
    package func open(_ path: String, writable: Bool, json: Bool) throws -> BlockImage {
        try openImage(path, openOptions(writable: writable), json: json)
    }
}

/// Opens an image with every format blk knows, printing the open's warnings; a failure is
/// reported and becomes the exit code.
package func openImage(_ path: String, _ options: OpenOptions, json: Bool) throws -> BlockImage {
    do {
        let image = try BlockImage.open(path, options: options)
        image.warnings.forEach(printWarning)
        return image
    } catch {
        throw report(error, json: json)
    }
}
