// Qcow2Snapshot: the internal snapshot table (qcow2.rst, "Snapshots"): one entry per snapshot,
// 8-byte aligned, each naming its own L1 table. blk keeps snapshots intact (writes copy shared
// clusters, Qcow2Writer.swift), counts their tables in checks, lists them in `blk info`, and
// creates, applies and deletes them (Qcow2SnapshotUpdate.swift), writing entries as QEMU 7.2 does.
//
//    0  l1_table_offset  u64    16  date_sec        u32    36  extra_data_size  u32
//    8  l1_size          u32    20  date_nsec       u32    40  extra data: vm_state_size_large u64,
//   12  id_str_size      u16    24  vm_clock_nsec   u64        disk_size u64, icount u64 (each optional)
//   14  name_size        u16    32  vm_state_size   u32        then the id, then the name
import BlockGraph

struct Qcow2Snapshot: Sendable, Hashable {
    var id: String
    var name: String
    var l1TableOffset: UInt64
    var l1Size: UInt32
    var dateSeconds: UInt32
    var dateNanoseconds: UInt32
    var vmClockNanoseconds: UInt64
    var vmStateSize: UInt64
    /// The guest's size when the snapshot was taken, if recorded.
    var diskSize: UInt64?
    /// Instructions executed (record/replay), if recorded.
    var icount: UInt64?
    /// The entry as the table holds it, unpadded: a rewritten table keeps other tools' entries
    /// byte for byte, extra data blk does not know included, as QEMU keeps them.
    var entryBytes: [UInt8]

    /// QEMU's limits on the snapshot table (QCOW_MAX_SNAPSHOTS_SIZE, QCOW_MAX_SNAPSHOTS).
    static let maxTableBytes = 64 << 20
    static let maxCount = 65536
    /// The extra data QEMU 7.2 writes: vm_state_size_large, disk_size, icount.
    static let extraDataBytes = 24

    /// The table and the bytes it takes (entries padded to 8 bytes), where the header — or a
    /// snapshot operation of this open since (`location`) — says it is.
    static func readTable(of driver: Qcow2Driver, at location: Qcow2SnapshotTableLocation) throws(BlockError)
        -> (entries: [Qcow2Snapshot], tableBytes: UInt64) {
        guard location.count > 0 else { return ([], 0) }
        let fileLength = UInt64(try driver.file.driver.length())
        let available = Int(min(fileLength - min(location.offset, fileLength), UInt64(maxTableBytes)))
        let table = try Qcow2Driver.readBytes(driver.file, at: location.offset, count: available)
        var snapshots: [Qcow2Snapshot] = []
        var offset = 0
        for number in 0..<Int(location.count) {
            guard offset + 40 <= table.count else {
                throw BlockError(.corrupt, "qcow2: the snapshot table is truncated at snapshot \(number + 1)")
            }
            let idSize = Int(table.bigEndian(UInt16.self, at: offset + 12))
            let nameSize = Int(table.bigEndian(UInt16.self, at: offset + 14))
            let extraSize = Int(table.bigEndian(UInt32.self, at: offset + 36))
            let entryBytes = 40 + extraSize + idSize + nameSize
            guard extraSize <= 1024, offset + entryBytes <= table.count else {
                throw BlockError(.corrupt, "qcow2: snapshot \(number + 1) runs past the snapshot table")
            }
            let l1Size = table.bigEndian(UInt32.self, at: offset + 8)
            guard UInt64(l1Size) * 8 <= Qcow2Header.maxL1Bytes else {
                throw BlockError(.corrupt, "qcow2: snapshot \(number + 1) L1 table too large")
            }
            func extra(_ at: Int) -> UInt64? { extraSize >= at + 8 ? table.bigEndian(UInt64.self, at: offset + 40 + at) : nil }
            let idStart = offset + 40 + extraSize
            snapshots.append(Qcow2Snapshot(
                id: String(decoding: table[idStart..<idStart + idSize], as: UTF8.self),
                name: String(decoding: table[idStart + idSize..<idStart + idSize + nameSize], as: UTF8.self),
                l1TableOffset: table.bigEndian(UInt64.self, at: offset),
                l1Size: l1Size,
                dateSeconds: table.bigEndian(UInt32.self, at: offset + 16),
                dateNanoseconds: table.bigEndian(UInt32.self, at: offset + 20),
                vmClockNanoseconds: table.bigEndian(UInt64.self, at: offset + 24),
                vmStateSize: extra(0) ?? UInt64(table.bigEndian(UInt32.self, at: offset + 32)),
                diskSize: extra(8),
                icount: extra(16).flatMap { $0 == .max ? nil : $0 },
                entryBytes: Array(table[offset..<offset + entryBytes])))
            offset += (entryBytes + 7) / 8 * 8
        }
        return (snapshots, UInt64(offset))
    }
}

extension Qcow2Snapshot {
    /// A new entry as QEMU 7.2's qcow2_write_snapshots lays it out, with no VM state.
    init(id: String, name: String, l1TableOffset: UInt64, l1Size: UInt32, dateSeconds: UInt32, dateNanoseconds: UInt32, diskSize: UInt64) {
        let idBytes = Array(id.utf8), nameBytes = Array(name.utf8)
        var bytes = [UInt8](repeating: 0, count: 40 + Self.extraDataBytes)
        bytes.setBigEndian(l1TableOffset, at: 0)
        bytes.setBigEndian(l1Size, at: 8)
        bytes.setBigEndian(UInt16(idBytes.count), at: 12)
        bytes.setBigEndian(UInt16(nameBytes.count), at: 14)
        bytes.setBigEndian(dateSeconds, at: 16)
        bytes.setBigEndian(dateNanoseconds, at: 20)
        bytes.setBigEndian(UInt32(Self.extraDataBytes), at: 36)
        bytes.setBigEndian(diskSize, at: 48)
        self.init(id: id, name: name, l1TableOffset: l1TableOffset, l1Size: l1Size, dateSeconds: dateSeconds, dateNanoseconds: dateNanoseconds,
                  vmClockNanoseconds: 0, vmStateSize: 0, diskSize: diskSize, icount: 0, entryBytes: bytes + idBytes + nameBytes)
    }

    /// The table holding `entries`, each padded to 8 bytes.
    static func tableBytes(_ entries: [Qcow2Snapshot]) -> [UInt8] {
        var table: [UInt8] = []
        for entry in entries {
            table += entry.entryBytes
            table += [UInt8](repeating: 0, count: (8 - entry.entryBytes.count % 8) % 8)
        }
        return table
    }
}

extension Qcow2Driver {
    /// The table's place now: the header's, unless a snapshot operation of this open moved it.
    func snapshotTableLocation(_ state: Qcow2WriterState) -> Qcow2SnapshotTableLocation {
        state.snapshotTable ?? header.snapshotTable
    }

    /// The internal snapshots, in table order.
    public func snapshots() throws(BlockError) -> [SnapshotInfo] {
        let location = writer.withLock { snapshotTableLocation($0) }
        return try Qcow2Snapshot.readTable(of: self, at: location).entries.map { snapshot in
            SnapshotInfo(id: snapshot.id, name: snapshot.name, vmStateSize: snapshot.vmStateSize, dateSeconds: snapshot.dateSeconds,
                         dateNanoseconds: snapshot.dateNanoseconds, vmClockNanoseconds: snapshot.vmClockNanoseconds,
                         icount: snapshot.icount)
        }
    }
}
