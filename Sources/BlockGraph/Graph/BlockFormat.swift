// BlockFormat: how a format driver plugs into `BlockImage.open` — its name, how it recognises
// an image from its first bytes (QEMU's bdrv_probe_all), and how it builds its node. Format
// drivers live in modules of their own (raw here, qcow2 in Qcow2), so the opener is handed the
// list of formats it may use. Creation is a format operation too (QEMU's bdrv_co_create_opts):
// there is no node yet to ask.
import BlockLocking

/// How a format plugs into the opener: a type, not an instance, because recognising and creating
/// an image come before there is a node to ask.
public protocol BlockFormat: Sendable {
    static var formatName: String { get }

    /// Whether the first bytes of an image (up to 512) are this format's.
    static func matches(header: [UInt8]) -> Bool

    /// The format node over `file`, with whatever children the format needs (a backing image,
    /// opened through `context`).
    static func open(file: BlockNode, context: FormatOpenContext) throws(BlockError) -> BlockNode

    /// Creates (or replaces) `path` as an image of this format.
    static func create(at path: String, options: ImageCreateOptions) throws(BlockError)

    /// Whether the format stores compressed clusters (QEMU's block_driver_can_compress): a
    /// compressed copy is refused before its image is made.
    static var writesCompressed: Bool { get }

    /// Whether an image of this format can read through to a backing file (QEMU's
    /// supports_backing): a backing file or size taken from one is refused for the others
    /// before anything is made.
    static var storesBackingFile: Bool { get }

    /// The options a creation with `options` makes, as qemu-img prints them after
    /// "Formatting 'PATH', fmt=NAME ": every option the format has, given or defaulted, in
    /// QEMU's order, so scripts that read one tool's line read the other's.
    static func creationSummary(_ options: ImageCreateOptions) -> String

    /// The storage an image of this format takes for `content`, created with `options` (qemu-img
    /// measure's figures, QEMU's bdrv_measure): options the format lacks are refused, as its
    /// create refuses them.
    static func measure(_ content: MeasuredContent, options: FormatOptions) throws(BlockError) -> SizeMeasurement
}

extension BlockFormat {
    /// A format that cannot make images (none yet, but a read-only one would) says so with exit 69.
    public static func create(at path: String, options: ImageCreateOptions) throws(BlockError) {
        throw BlockError(.notSupportedByFormat, "Format driver '\(formatName)' does not support image creation")
    }
    /// A format that cannot size its images in advance says so with exit 69, in qemu-img's words.
    public static func measure(_ content: MeasuredContent, options: FormatOptions) throws(BlockError) -> SizeMeasurement {
        throw BlockError(.notSupportedByFormat, "Block driver '\(formatName)' does not support size measurement")
    }
    /// Most formats store clusters only as they read.
    public static var writesCompressed: Bool { false }
    /// Backing files are a feature of formats with allocation maps.
    public static var storesBackingFile: Bool { false }
    /// What qemu-img prints for a format without options of its own (raw): the size, and the
    /// preallocation when not off.
    public static func creationSummary(_ options: ImageCreateOptions) -> String {
        "size=\(options.virtualSize)" + (options.preallocation == .off ? "" : " preallocation=\(options.preallocation)")
    }
}

/// What a format needs to open its node: the user's options and the rest of the format list,
/// for backing files.
public struct FormatOpenContext: Sendable {
    /// The image's path as given, from which relative backing file names are resolved.
    public var path: String
    /// The open's options, which the format reads its own settings from (writable, cache size).
    public var options: OpenOptions
    /// The formats a backing image may be opened with: the same as the image's own.
    public var formats: [any BlockFormat.Type]
    /// Files already open below this one in a backing chain, to refuse loops.
    public var chain: [FileIdentity]

    /// For a format opened over a node the caller built (a driver of its own, not a file).
    public init(path: String, options: OpenOptions, formats: [any BlockFormat.Type], chain: [FileIdentity] = []) {
        self.path = path
        self.options = options
        self.formats = formats
        self.chain = chain
    }

    /// The backing image at `path` as a node for the `.backing` role: its own file and format
    /// nodes (the format `format` names, or a probe's), read-only, without the raw window of the
    /// image above it, and with the test wrappers asked for backing images, not the image's own.
    /// A chain that loops or passes 64 images is refused.
    public func openBacking(_ path: String, format: String?) throws(BlockError) -> BlockNode {
        guard chain.count < 64 else { throw BlockError(.corrupt, "Could not open '\(path)': the backing chain is too deep") }
        var backingOptions = options
        backingOptions.format = format
        backingOptions.writable = false
        backingOptions.faults = options.backingFaults
        backingOptions.writeJournalPath = options.backingWriteJournalPath
        backingOptions.rawByteOffset = 0
        backingOptions.rawWindowSize = nil
        return try BlockImage.openGraph(path, options: backingOptions, formats: formats, chain: chain).root
    }
}

/// Recognising a format from an image's first bytes, as QEMU's bdrv_probe_all does.
public enum FormatProbe {
    /// qcow2's magic, "QFI\xfb" (docs/interop/qcow2.rst, header bytes 0–3, big-endian). Known
    /// here even without the qcow2 driver, so a raw image is never written into looking like one.
    public static let qcow2Magic: [UInt8] = [0x51, 0x46, 0x49, 0xfb]

    /// The format the bytes at the start of an image say it is: the first of `formats` that
    /// claims them, "qcow2" for its magic even without the driver, else "raw".
    public static func format(ofHeader header: [UInt8], among formats: [any BlockFormat.Type]) -> String {
        if let format = formats.first(where: { $0.formatName != "raw" && $0.matches(header: header) }) { return format.formatName }
        return header.starts(with: qcow2Magic) ? "qcow2" : "raw"
    }
}

/// The raw format (Drivers/RawDriver.swift) as a `BlockFormat`.
public enum RawFormat: BlockFormat {
    /// "raw", as `-f raw` and qemu-img name it.
    public static let formatName = "raw"

    /// Any bytes are a raw image: probing tries raw last.
    public static func matches(header: [UInt8]) -> Bool { true }

    /// A raw node over `file`, limited to the window `offset`/`size` options name.
    public static func open(file: BlockNode, context: FormatOpenContext) throws(BlockError) -> BlockNode {
        let driver = try RawDriver(file: file, byteOffset: context.options.rawByteOffset, windowSize: context.options.rawWindowSize)
        return BlockNode(driver: driver, children: [(.file, file)])
    }

    /// `options.virtualSize` zero bytes, allocated as `options.preallocation` asks (sparse by
    /// default); raw has no clusters and no backing file.
    public static func create(at path: String, options: ImageCreateOptions) throws(BlockError) {
        try options.formatOptions?.refuseUnknown([], format: formatName)
        guard options.backingFile == nil && options.backingFormat == nil else {
            throw BlockError(.invalidRequest, "raw images have no backing file")
        }
        guard options.clusterSize == nil else { throw BlockError(.invalidRequest, "Invalid parameter 'cluster_size'") }
        guard options.preallocation != .metadata else { throw BlockError(.invalidRequest, "Unsupported preallocation mode: metadata") }
        let file = try createImageFile(at: path, byteCount: options.virtualSize, locking: options.locking, lease: options.lease)
        try file.preallocate(0..<options.virtualSize, options.preallocation)
        // On the storage before the lease is given back (and the locks): a host that takes the
        // image next must not have its writes overtaken by this page cache's write-back.
        try file.flush()
    }

    /// Every guest byte is a byte of the file, allocated or not (QEMU's raw_measure).
    public static func measure(_ content: MeasuredContent, options: FormatOptions) throws(BlockError) -> SizeMeasurement {
        try options.refuseUnknown(["preallocation"], format: formatName)
        _ = try options.choice("preallocation", of: Preallocation.self)
        let size = try content.sectorAlignedSize()
        return SizeMeasurement(required: size, fullyAllocated: size)
    }
}
