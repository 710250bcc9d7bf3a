// Qcow2Format: qcow2 as a `BlockFormat` — recognised by its magic, opened by reading and
// checking the header, then the L1 table, then the backing chain.
import BlockGraph

/// qcow2 as a format of the registry: recognised by its magic, opened with its backing chain,
/// and created with QEMU's layout.
public enum Qcow2Format: BlockFormat {
    /// "qcow2", as `-f qcow2` names it.
    public static let formatName = "qcow2"

    /// Memory for cached metadata per open image, four fifths for L2 tables and one fifth for
    /// refcount blocks (QEMU's cache-size; its L2 default is 1 MiB, more keeps random reads of a
    /// large image off the disk).
    public static let defaultCacheBytes = 4 << 20

    /// The magic "QFI\xfb" in the first four bytes.
    public static func matches(header: [UInt8]) -> Bool { header.starts(with: FormatProbe.qcow2Magic) }

    /// qcow2 stores compressed clusters (deflate, or zstd where the image says so).
    public static var writesCompressed: Bool { true }

    /// Parses and checks the header, opens the backing image as a `.backing` child, and builds the
    /// driver; a corrupt image opens read-write only for repair.
    public static func open(file: BlockNode, context: FormatOpenContext) throws(BlockError) -> BlockNode {
        let headerBytes = try readHeaderCluster(file, fileLength: try file.driver.length())
        // The length now, after the header: a writer beside us grows the file before it points
        // the header at a table there.
        let header = try Qcow2Header.parse(headerBytes, fileLength: try file.driver.refreshedLength())
        if header.incompatibleFeatures & Qcow2Header.corruptBit != 0 && context.options.writable
            && !context.options.repairing {
            throw BlockError(.corrupt, "qcow2: Image is corrupt; cannot be opened read/write")
        }
        let backing = try header.backingFile.flatMap { (name) throws(BlockError) -> BlockNode? in
            guard context.options.opensBacking else { return nil }
            return try context.openBacking(backingPath(name, besides: context.path), format: header.backingFormat)
        }
        let dataFile = try openDataFile(header, context: context)
        let driver = try Qcow2Driver(header: header, file: file, fileName: context.path, backing: backing, writable: context.options.writable,
                                     repairing: context.options.repairing, forceShare: context.options.forceShare,
                                     cacheBytes: context.options.metadataCacheBytes ?? defaultCacheBytes, dataFile: dataFile)
        var children: [(role: ChildRole, node: BlockNode)] = [(.file, file)]
        if let dataFile { children.append((.data, dataFile.node)) }
        if let backing { children.append((.backing, backing)) }
        return BlockNode(driver: driver, children: children)
    }

    /// The backing file's path as QEMU makes it (path_combine): an absolute name as it is, a
    /// relative one after the folder of the image's path as given. It is qemu-img's
    /// full-backing-filename, so it stays relative for an image opened by a relative path.
    static func backingPath(_ name: String, besides imagePath: String) -> String {
        guard !name.hasPrefix("/"), let slash = imagePath.lastIndex(of: "/") else { return name }
        return String(imagePath[...slash]) + name
    }

    /// The first cluster, where the header and its extensions are (all of a smaller file), and
    /// not a byte past it: a writer beside us may be trimming the file's growth ahead while we
    /// open it, under a length read a moment ago, but it never trims into the first cluster.
    private static func readHeaderCluster(_ file: BlockNode, fileLength: Int64) throws(BlockError) -> [UInt8] {
        let start = try Qcow2Driver.readBytes(file, at: 0, count: Int(min(fileLength, 512)))
        guard start.count >= 24 else { return start }
        let clusterBits = start.bigEndian(UInt32.self, at: 20)
        // A size the parser refuses needs no more bytes for it to say so.
        guard (9...21).contains(clusterBits), fileLength > 512 else { return start }
        return try Qcow2Driver.readBytes(file, at: 0, count: Int(min(fileLength, Int64(1) << clusterBits)))
    }
}
