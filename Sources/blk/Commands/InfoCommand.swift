// `blk info`: what an image is and who else holds it, in qemu-img's words and JSON field names.
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking
import Glibc
import Posix

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
        var fullBackingFilename: String?
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

        init(_ snapshot: SnapshotInfo) {
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

    /// qemu-img's "format-specific" object: the format's name and its fields.
    struct FormatSpecific: Encodable {
        var type: String
        var data: FieldsJSON
    }

    /// The format's fields under their own names, as qemu-img's QAPI object has them.
    struct FieldsJSON: Encodable {
        var fields: [FormatSpecificInfo.Field]

        struct Name: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Name.self)
            for field in fields { try container.encode(ValueJSON(value: field.value), forKey: Name(stringValue: field.name)) }
        }
    }

    struct ValueJSON: Encodable {
        var value: FormatSpecificInfo.Value

        func encode(to encoder: any Encoder) throws {
            switch value {
            case .string(let text):
                var container = encoder.singleValueContainer()
                try container.encode(text)
            case .integer(let number):
                var container = encoder.singleValueContainer()
                try container.encode(number)
            case .boolean(let flag):
                var container = encoder.singleValueContainer()
                try container.encode(flag)
            case .list(let values):
                var container = encoder.unkeyedContainer()
                for value in values { try container.encode(ValueJSON(value: value)) }
            case .object(let fields):
                try FieldsJSON(fields: fields).encode(to: encoder)
            }
        }
    }

    func run() throws {
        let opened = try imageOptions.open(image, writable: false, json: json)
        let virtualSize: Int64, actualSize: Int64?, holders: [LockHolder], snapshots: [SnapshotInfo], info: FormatSpecificInfo?
        do throws(BlockError) {
            virtualSize = try opened.length()
            actualSize = try opened.allocatedBytes()
            holders = try otherHolders(of: opened)
            snapshots = try unlessNotSupportedByFormat { () throws(BlockError) in try opened.snapshots() } ?? []
            info = try unlessNotSupportedByFormat { () throws(BlockError) in try opened.formatInfo() }
        } catch {
            throw report(error, json: json)
        }
        if json {
            printJSON(InfoJSON(filename: image, format: opened.format, virtualSize: virtualSize, actualSize: actualSize,
                               dirtyFlag: info?.isDirty ?? false, clusterSize: info?.clusterSize,
                               backingFilename: info?.backingFile, fullBackingFilename: info?.fullBackingFile,
                               backingFilenameFormat: info?.backingFormat,
                               formatSpecific: info.map { FormatSpecific(type: opened.format, data: FieldsJSON(fields: $0.fields)) },
                               snapshots: snapshots.isEmpty ? nil : snapshots.map(SnapshotJSON.init),
                               holders: holders.map(HolderJSON.init)))
            return
        }
        print("image: \(escapingControlCharacters(image))")
        print("file format: \(opened.format)")
        print("virtual size: \(humanSize(virtualSize)) (\(virtualSize) bytes)")
        print("disk size: \(actualSize.map(humanSize) ?? "unavailable")")
        if let info {
            if let clusterSize = info.clusterSize { print("cluster_size: \(clusterSize)") }
            if let backing = info.backingFile {
                // qemu-img's words: the path the name means from here, when it differs.
                let actualPath = info.fullBackingFile.map { $0 == backing ? "" : " (actual path: \(escapingControlCharacters($0)))" }
                print("backing file: \(escapingControlCharacters(backing))\(actualPath ?? " (cannot determine actual path)")")
            }
            if let format = info.backingFormat { print("backing file format: \(escapingControlCharacters(format))") }
            if !snapshots.isEmpty { printSnapshotList(snapshots) }
            if !info.fields.isEmpty {
                print("Format specific information:")
                printFields(info.fields, indentation: 1)
            }
        }
        if holders.isEmpty {
            print("held by: no other process")
        } else {
            print("held by:")
            for holder in holders { print("  \(holder.summary)") }
        }
    }

    /// qemu-img's dump of a QAPI object: four spaces per level, dashes in names as spaces, lists
    /// as `[index]:`, a composite value on the lines after its name.
    private func printFields(_ fields: [FormatSpecificInfo.Field], indentation: Int) {
        for field in fields {
            printValue(field.value, labelled: String(field.name.map { $0 == "-" ? " " : $0 }), indentation: indentation)
        }
    }

    private func printValue(_ value: FormatSpecificInfo.Value, labelled label: String, indentation: Int) {
        let prefix = String(repeating: " ", count: indentation * 4) + escapingControlCharacters(label) + ":"
        switch value {
        case .string(let text): print(prefix + " " + escapingControlCharacters(text))
        case .integer(let number): print(prefix + " \(number)")
        case .boolean(let flag): print(prefix + " \(flag)")
        case .list(let values):
            print(prefix)
            for (index, element) in values.enumerated() { printValue(element, labelled: "[\(index)]", indentation: indentation + 1) }
        case .object(let fields):
            print(prefix)
            printFields(fields, indentation: indentation + 1)
        }
    }

    /// Who holds the image besides this open, seen through a descriptor that holds no locks.
    private func otherHolders(of opened: BlockImage) throws(BlockError) -> [LockHolder] {
        do throws(LockingError) {
            let probe = try LockedImageFile(path: image, writable: false, mode: .off)
            return try LockReport.inspect(descriptor: probe.descriptor, path: image, excluding: opened.lockDescriptor).holders
        } catch {
            throw BlockError(error)
        }
    }
}
