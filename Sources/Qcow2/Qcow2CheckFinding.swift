// Qcow2CheckFinding: the words of qcow2's check findings (Qcow2Check.swift), as qemu-img prints
// them. Only the findings a check result keeps are put into words (ImageCheckResult.Findings
// takes them as autoclosures): a hostile image makes millions, most never shown.
enum Qcow2CheckFinding {
    private static func hex(_ offset: UInt64) -> String { "0x" + String(offset, radix: 16) }

    /// An active L1 entry (`l2TableOffset` nil) or L2 entry whose COPIED bit disagrees with its
    /// cluster's refcount.
    static func copiedFlag(l2TableOffset: UInt64?, index: Int, entry: UInt64, refcount: UInt64) -> String {
        let entryHex = String(entry, radix: 16)
        if l2TableOffset == nil { return "OFLAG_COPIED L2 cluster: l1_index=\(index) l1_entry=\(entryHex) refcount=\(refcount)" }
        if entry & Qcow2Driver.compressedBit != 0 { return "OFLAG_COPIED compressed cluster: l2_entry=\(entryHex)" }
        return "OFLAG_COPIED data cluster: l2_entry=\(entryHex) refcount=\(refcount)"
    }

    /// A region that ends a cluster or more past the end of the file.
    static func pastTheEnd(offset: UInt64, byteCount: UInt64) -> String {
        "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset \(hex(offset)) size \(hex(byteCount))"
    }

    static func invalidL1Table(name: String, offset: UInt64) -> String { "ERROR \(name) at offset \(hex(offset)) is invalid" }

    static func invalidL2Table(offset: UInt64, l1Table: String, index: Int) -> String {
        "ERROR L2 table at offset \(hex(offset)) (\(l1Table) entry \(index)) is invalid"
    }

    static func unalignedCluster(offset: UInt64) -> String {
        "ERROR offset=\(hex(offset)): Cluster is not properly aligned; L2 entry corrupted"
    }

    static func invalidRefcountBlock(index: Int, offset: UInt64) -> String {
        "ERROR refcount block \(index) at offset \(hex(offset)) is unaligned or past the end of the file"
    }

    /// A refcount block the refcount table names more than once, or names as something else too.
    static func refcountBlockNamedAgain(index: Int, references: UInt64) -> String { "ERROR refcount block \(index) refcount=\(references)" }
}
