// SnapshotList: qemu-img's snapshot table, as `blk info` and `blk snapshot -l` print it.
import BlockLayer
import BlockLocking
import Glibc
import Posix

/// qemu-img's table: fixed columns, local time, the VM clock as hours:minutes:seconds.millis.
func printSnapshotList(_ snapshots: [SnapshotInfo]) {
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
