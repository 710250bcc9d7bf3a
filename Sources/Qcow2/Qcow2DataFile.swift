// Qcow2DataFile: external data files (docs/interop/qcow2.rst: incompatible bit 2 "External data
// file", autoclear bit 1 "Raw external data", header extension 0x44415441 "External data file
// name"). Guest clusters live in a second file, each at its guest offset; the image file keeps
// the metadata only. QEMU's rules, kept here:
//   - an L2 entry's host offset equals the guest offset, and offset 0 with COPIED set is an
//     allocated cluster (the first), not an unallocated one;
//   - no compressed clusters (an entry that says so is corruption) and no internal snapshots;
//   - data clusters have no refcounts: they are never allocated, freed or leaked, and their
//     COPIED flag is always set (refcount 1 by definition);
//   - "raw external data": the data file alone reads as the guest's disk. Zeroing writes zeroes
//     into the data file before any L2 entry says zero; blk honours that, so it keeps the bit.
//   - the name is resolved as QEMU 7.2 resolves it: as given, relative to the working
//     directory (qemu-img create makes a relative data file there, too), not beside the image.
//
// Crash order, on top of Qcow2Writer.swift's: data goes to the data file; every write-back
// fdatasyncs the data file before it writes an L2 table, so no entry on disk points at data
// that is not durable, and a flush flushes the data file after the image file.
import BlockGraph

extension Qcow2Header {
    /// The extension that names the external data file.
    static let dataFileExtension: UInt32 = 0x4441_5441
    /// Autoclear bit 1: the data file is a valid raw image on its own.
    public static let rawExternalDataBit: UInt64 = 1 << 1
    /// Longer names are refused: no path on Linux is longer (PATH_MAX).
    static let maxDataFileNameBytes = 4095

    /// Guest data lives in another file.
    public var hasExternalDataFile: Bool { version >= 3 && incompatibleFeatures & Self.externalDataFileBit != 0 }
    /// The data file reads as the guest's disk without the metadata.
    public var hasRawExternalData: Bool { version >= 3 && autoclearFeatures & Self.rawExternalDataBit != 0 }

    /// The extension's name, checked as hostile input: not empty, no NUL (QEMU reads it as a C
    /// string, so a NUL would make the name QEMU opens differ from the one stored), UTF-8, at
    /// most PATH_MAX.
    static func dataFileName(_ bytes: [UInt8]) throws(BlockError) -> String {
        func malformed(_ why: String) -> BlockError {
            BlockError(.corrupt, "qcow2: the external data file name extension is malformed: \(why)")
        }
        guard !bytes.isEmpty else { throw malformed("the name is empty") }
        guard bytes.count <= maxDataFileNameBytes else { throw malformed("the name is \(bytes.count) bytes long") }
        guard !bytes.contains(0) else { throw malformed("the name contains a NUL byte") }
        guard let name = String(validating: bytes, as: UTF8.self) else { throw malformed("the name is not UTF-8") }
        return name
    }

    /// QEMU's open-time rules: the raw bit needs a data file; a data file needs its name, since
    /// blk takes no data-file option to supply one.
    func checkDataFile() throws(BlockError) {
        if hasRawExternalData && !hasExternalDataFile {
            throw BlockError(.corrupt, "qcow2: data-file-raw requires a data file (autoclear bit 1 is set without incompatible bit 2)")
        }
        if hasExternalDataFile && dataFile == nil {
            throw BlockError(.unsupported, "qcow2: 'data-file' is required for this image: it has an external data file but does not name it, and blk takes no data-file option")
        }
    }
}

extension Qcow2Format {
    /// The data file node and its path, for an image that has one.
    static func openDataFile(_ header: Qcow2Header, context: FormatOpenContext) throws(BlockError) -> (node: BlockNode, path: String)? {
        guard header.hasExternalDataFile, let name = header.dataFile else { return nil }
        do throws(BlockError) {
            return (try context.openDataFile(name), name)
        } catch {
            var failure = error
            if !failure.message.hasPrefix("Could not open") { failure.message = "Could not open data file '\(name)': " + failure.message }
            throw failure
        }
    }

    /// Refuses what qemu-img create refuses with `data_file` and `data_file_raw`; the data file
    /// name and whether it is raw, for the header.
    static func dataFileOptions(_ options: ImageCreateOptions) throws(BlockError) -> (name: String, raw: Bool)? {
        let formatOptions = options.formatOptions
        let name = formatOptions?.string("data_file")
        let raw = try formatOptions?.flag("data_file_raw") ?? false
        if raw && name == nil { throw BlockError(.invalidRequest, "data-file-raw requires data-file") }
        if raw && options.backingFile != nil {
            throw BlockError(.invalidRequest, "Backing file and data-file-raw cannot be used at the same time")
        }
        guard let name else { return nil }
        guard !name.isEmpty, !name.utf8.contains(0), name.utf8.count <= Qcow2Header.maxDataFileNameBytes else {
            throw BlockError(.invalidRequest, "Invalid data file name '\(name)'")
        }
        return (name, raw)
    }

    /// What qemu-img prints for the data file options after the backing ones.
    static func dataFileSummary(_ options: ImageCreateOptions) -> [String] {
        let name = options.formatOptions?.string("data_file")
        let raw = (try? options.formatOptions?.flag("data_file_raw")) == true
        return (name.map { ["data_file=\($0)"] } ?? []) + (raw ? ["data_file_raw=on"] : [])
    }
}

extension Qcow2Driver {
    /// Where guest data is read and written: the external data file, or the image file.
    var dataNode: BlockNode { dataFile ?? file }

    /// The autoclear bits a write keeps: raw external data, which blk keeps true.
    var honouredAutoclearBits: UInt64 { dataFile == nil ? 0 : Qcow2Header.rawExternalDataBit }

    /// Host offsets for `count` new data clusters from guest cluster `first`: in the data file
    /// the guest offset itself (nothing to allocate or count), else new clusters of the file.
    func allocateDataClusters(_ count: UInt64, from first: UInt64, _ state: inout Qcow2WriterState) throws(BlockError) -> UInt64 {
        guard dataFile == nil else { return first << UInt64(clusterBits) }
        return try allocateClusters(count, &state)
    }

    /// An entry of a data-file image must point at its own guest offset and never be compressed
    /// (QEMU signals both as corruption): anything else would read, or write over, another
    /// cluster's data.
    func checkDataFileMapping(_ mapping: ClusterMapping, cluster: UInt64) throws(BlockError) {
        guard dataFile != nil else { return }
        switch mapping {
        case .compressed:
            throw BlockError(.corrupt, "qcow2: Compressed cluster entry found in image with external data file (guest cluster \(cluster))")
        case .data(let hostOffset) where hostOffset != cluster << UInt64(clusterBits):
            throw BlockError(.corrupt, "qcow2: data cluster offset 0x\(String(hostOffset, radix: 16)) differs from its guest offset in an image with an external data file (guest cluster \(cluster))")
        default:
            break
        }
    }

    /// Reads data clusters from the data file; what lies past its end reads as zeroes, as QEMU's
    /// file driver reads it.
    func readDataFile(at hostOffset: UInt64, into target: UnsafeMutableRawBufferPointer) throws(BlockError) {
        let length = UInt64(max(0, try dataDriver.length()))
        let inside = Int(min(UInt64(target.count), length > hostOffset ? length - hostOffset : 0))
        if inside > 0 { try dataDriver.read(at: Int64(hostOffset), into: UnsafeMutableRawBufferPointer(rebasing: target[0..<inside])) }
        if inside < target.count {
            UnsafeMutableRawBufferPointer(rebasing: target[inside...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// Makes data written to the data file durable, before the L2 entries that point at it.
    func flushDataFile() throws(BlockError) {
        guard dataFile != nil else { return }
        try dataDriver.flush()
    }

    /// Raw external data: zeroed clusters are zeroed in the data file first, so it keeps reading
    /// as the guest's disk whatever the L2 entries then say.
    func zeroRawDataFile(from first: UInt64, count: Int) throws(BlockError) {
        guard dataFile != nil, header.hasRawExternalData else { return }
        let start = Int64(first) << Int64(clusterBits)
        let imageEnd = try length()
        let end = min(start + Int64(count) << Int64(clusterBits), imageEnd)
        guard end > start else { return }
        try dataNode.during(.dataWrite) { () throws(BlockError) in
            try dataDriver.writeZeroes(at: start, byteCount: end - start, mayUnmap: true)
        }
    }

    /// qemu-img info's data file fields, after refcount-bits.
    var dataFileInfoFields: [FormatSpecificInfo.Field] {
        guard let name = header.dataFile, header.hasExternalDataFile else { return [] }
        return [.init("data-file", .string(name)), .init("data-file-raw", .boolean(header.hasRawExternalData))]
    }

    /// Operations QEMU refuses on a data-file image (ENOTSUP): their metadata would need
    /// refcounted data clusters.
    func refuseWithDataFile(_ operation: String) throws(BlockError) {
        guard dataFile != nil else { return }
        throw BlockError(.notSupportedByFormat, "qcow2: \(operation) is not supported with an external data file")
    }
}
