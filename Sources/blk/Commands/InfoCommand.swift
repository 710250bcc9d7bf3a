// `blk info`: what an image is and who else holds it, in qemu-img's words and JSON field names.
import ArgumentParser
import BlockLayer
import Glibc
import BlockLocking
import Qcow2

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show an image's format, sizes and holders.")

    @OptionGroup var imageOptions: ImageOptions
    @Flag(help: "Print JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String

    struct InfoJSON: Encodable {
        var filename: String
        var format: String
        var virtualSize: Int64
        var actualSize: Int64?
        var dirtyFlag: Bool
        var clusterSize: Int?
        var backingFilename: String?
        var backingFilenameFormat: String?
        var formatSpecific: FormatSpecific?
        var snapshots: [SnapshotJSON]?
        var holders: [HolderJSON]
    }

    /// qemu-img's SnapshotInfo.
    struct SnapshotJSON: Encodable {
        var id: String
        var name: String
        var vmStateSize: UInt64
        var dateSec: UInt32
        var dateNsec: UInt32
        var vmClockSec: UInt64
        var vmClockNsec: UInt64
        var icount: UInt64?

        init(_ snapshot: Qcow2Snapshot) {
            id = snapshot.id
            name = snapshot.name
            vmStateSize = snapshot.vmStateSize
            dateSec = snapshot.dateSeconds
            dateNsec = snapshot.dateNanoseconds
            vmClockSec = snapshot.vmClockNanoseconds / 1_000_000_000
            vmClockNsec = snapshot.vmClockNanoseconds % 1_000_000_000
            icount = snapshot.icount
        }
    }

    /// qemu-img's "format-specific" block for qcow2.
    struct FormatSpecific: Encodable {
        var type: String
        var data: Qcow2Data
    }

    struct Qcow2Data: Encodable {
        var compat: String
        var compressionType: String
        var lazyRefcounts: Bool
        var refcountBits: Int
        var corrupt: Bool
        var extendedL2: Bool
    }

    func run() throws {
        let opened = try imageOptions.open(image, writable: false, json: json)
        let virtualSize: Int64, actualSize: Int64?, holders: [LockHolder], snapshots: [Qcow2Snapshot]
        do throws(BlockError) {
            virtualSize = try opened.length()
            actualSize = try opened.allocatedBytes()
            holders = try otherHolders(of: opened)
            snapshots = try (opened.root.driver as? Qcow2Driver)?.snapshots() ?? []
        } catch {
            throw report(error, json: json)
        }
        let qcow2 = (opened.root.driver as? Qcow2Driver)?.header
        let specific = qcow2.map { header in
            FormatSpecific(type: "qcow2", data: Qcow2Data(
                compat: header.version == 2 ? "0.10" : "1.1",
                compressionType: header.compressionType == 1 ? "zstd" : "zlib",
                lazyRefcounts: header.compatibleFeatures & 1 != 0,
                refcountBits: 1 << Int(header.refcountOrder),
                corrupt: header.incompatibleFeatures & Qcow2Header.corruptBit != 0,
                extendedL2: header.incompatibleFeatures & Qcow2Header.extendedL2Bit != 0))
        }
        if json {
            printJSON(InfoJSON(filename: image, format: opened.format, virtualSize: virtualSize, actualSize: actualSize,
                               dirtyFlag: (qcow2?.incompatibleFeatures ?? 0) & Qcow2Header.dirtyBit != 0,
                               clusterSize: qcow2?.clusterSize, backingFilename: qcow2?.backingFile,
                               backingFilenameFormat: qcow2?.backingFormat, formatSpecific: specific,
                               snapshots: snapshots.isEmpty ? nil : snapshots.map(SnapshotJSON.init),
                               holders: holders.map(HolderJSON.init)))
            return
        }
        print("image: \(escapingControlCharacters(image))")
        print("file format: \(opened.format)")
        print("virtual size: \(humanSize(virtualSize)) (\(virtualSize) bytes)")
        print("disk size: \(actualSize.map(humanSize) ?? "unavailable")")
        if let qcow2, let specific {
            print("cluster_size: \(qcow2.clusterSize)")
            if let backing = qcow2.backingFile { print("backing file: \(escapingControlCharacters(backing))") }
            if let format = qcow2.backingFormat { print("backing file format: \(escapingControlCharacters(format))") }
            if !snapshots.isEmpty { printSnapshotList(snapshots) }
            print("Format specific information:")
            print("    compat: \(specific.data.compat)")
            print("    compression type: \(specific.data.compressionType)")
            print("    lazy refcounts: \(specific.data.lazyRefcounts)")
            print("    refcount bits: \(specific.data.refcountBits)")
            print("    corrupt: \(specific.data.corrupt)")
            print("    extended l2: \(specific.data.extendedL2)")
        }
        if holders.isEmpty {
            print("held by: no other process")
        } else {
            print("held by:")
            for holder in holders { print("  \(holder.summary)") }
        }
    }

    /// qemu-img's table: fixed columns, local time, the VM clock as hours:minutes:seconds.millis.
    private func printSnapshotList(_ snapshots: [Qcow2Snapshot]) {
        func pad(_ text: String, _ width: Int, left: Bool) -> String {
            let padding = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + padding : padding + text
        }
        print("Snapshot list:")
        print(pad("ID", 10, left: true) + pad("TAG", 17, left: true) + pad("VM SIZE", 8, left: false) + pad("DATE", 20, left: false)
              + pad("VM CLOCK", 13, left: false) + pad("ICOUNT", 11, left: false))
        for snapshot in snapshots {
            var seconds = time_t(snapshot.dateSeconds)
            var broken = tm()
            localtime_r(&seconds, &broken)
            var date = [CChar](repeating: 0, count: 32)
            _ = strftime(&date, date.count, "%Y-%m-%d %H:%M:%S", &broken)
            let clock = snapshot.vmClockNanoseconds / 1_000_000
            let clockText = formatted("%02llu:%02llu:%02llu.%03llu", clock / 3_600_000, clock / 60_000 % 60, clock / 1000 % 60, clock % 1000)
            print(pad(escapingControlCharacters(snapshot.id), 9, left: true) + " " + pad(escapingControlCharacters(snapshot.name), 16, left: true) + " "
                  + pad(humanSize(Int64(snapshot.vmStateSize)), 8, left: false)
                  + pad(String(decoding: date.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), 20, left: false)
                  + pad(clockText, 13, left: false) + pad(snapshot.icount.map(String.init) ?? "", 11, left: false))
        }
    }

    /// Who holds the image besides this open, seen through a descriptor that holds no locks.
    private func otherHolders(of opened: BlockImage) throws(BlockError) -> [LockHolder] {
        do throws(LockingError) {
            let probe = try LockedImageFile(path: image, writable: false, mode: .off)
            let ownLocks = (opened.root.protocolNode.driver as? FileDriver)?.locks.descriptor
            return try LockReport.inspect(descriptor: probe.descriptor, path: image, excluding: ownLocks).holders
        } catch {
            throw BlockError(error)
        }
    }
}
