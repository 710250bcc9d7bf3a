// ImagePermission: QEMU's block permissions and the bytes of the image file that stand for them.
//
// QEMU (block/file-posix.c, RAW_LOCK_PERM_BASE / RAW_LOCK_SHARED_BASE) holds a shared OFD lock on
// byte 100+i while it holds permission i, and on byte 200+i while it refuses to share it. Bit i
// follows include/block/block-common.h: 0 consistent read, 1 write, 2 write unchanged, 3 resize.
// QEMU ≤ 6.1 had a fifth permission, "graph modification", on bytes 104/204; it is never locked.

/// A set of QEMU block permissions.
public struct ImagePermissions: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// QEMU's BLK_PERM_* bits: bit i is locked at bytes 100+i and 200+i.
    public let rawValue: UInt8
    /// Keeps only QEMU's four bits, so no set names a byte outside 100–103 and 200–203.
    public init(rawValue: UInt8) { self.rawValue = rawValue & 0b1111 }

    /// Reading sees a consistent image: held by every open that reads.
    public static let consistentRead = ImagePermissions(rawValue: 1 << 0)
    /// Changing what the guest sees: the permission a running VM refuses to share.
    public static let write = ImagePermissions(rawValue: 1 << 1)
    /// Writes that leave the data as it was (QEMU's block jobs); never taken by BlockLayer, but
    /// reported when another process holds it.
    public static let writeUnchanged = ImagePermissions(rawValue: 1 << 2)
    /// Changing the image's size: held by qcow2 writers, which grow their file.
    public static let resize = ImagePermissions(rawValue: 1 << 3)

    /// Every permission: what image creation holds and refuses to share, so it never truncates an
    /// image another process has open.
    public static let all: ImagePermissions = [.consistentRead, .write, .writeUnchanged, .resize]

    /// The single permissions in QEMU's bit order, which is also the order QEMU checks them in.
    public static let each: [ImagePermissions] = [.consistentRead, .write, .writeUnchanged, .resize]

    /// The single permissions in this set, in QEMU's bit order.
    public var members: [ImagePermissions] { ImagePermissions.each.filter(contains) }

    /// The bit number i of a single permission.
    var bitIndex: Int { rawValue.trailingZeroBitCount }

    /// Byte 100+i: locked (shared) while this permission is held.
    public var heldByte: Int64 { 100 + Int64(bitIndex) }

    /// Byte 200+i: locked (shared) while this permission is not shared with others.
    public var unsharedByte: Int64 { 200 + Int64(bitIndex) }

    /// QEMU's name for a single permission (bdrv_perm_names), as its error messages print it.
    public var qemuName: String {
        switch self {
        case .consistentRead: "consistent read"
        case .write: "write"
        case .writeUnchanged: "write unchanged"
        case .resize: "resize"
        default: members.map(\.qemuName).joined(separator: ", ")
        }
    }

    /// Kebab-case names for JSON output.
    public var jsonNames: [String] {
        members.map { $0.qemuName.split(separator: " ").joined(separator: "-") }
    }

    /// QEMU's names, as messages and `blk locks` print them.
    public var description: String { isEmpty ? "none" : qemuName }
}

/// What one open of an image asks for: the permissions it holds and those it refuses to share.
public struct PermissionRequest: Sendable, Hashable, CustomStringConvertible {
    /// What the open does to the image; each is locked at byte 100+i.
    public var held: ImagePermissions
    /// What the open does not let others do at the same time; each is locked at byte 200+i.
    public var unshared: ImagePermissions

    /// A request as QEMU's permission functions produce one.
    public init(held: ImagePermissions, unshared: ImagePermissions) {
        self.held = held
        self.unshared = unshared
    }

    /// No permissions and nothing refused: an inactive open, or one with locking off.
    public static let none = PermissionRequest(held: [], unshared: [])

    /// A qcow2 image open read-write, as QEMU locks it (interface.md §2): a qcow2 writer grows
    /// its file, so it also holds resize and shares neither.
    public static let qcow2ReadWrite = PermissionRequest(held: [.consistentRead, .write, .resize], unshared: [.write, .resize])
    /// A qcow2 image open read-only: it still refuses to share write and resize, since its cached
    /// metadata would go stale under a writer.
    public static let qcow2ReadOnly = PermissionRequest(held: [.consistentRead], unshared: [.write, .resize])
    /// A raw image open read-write, as a QEMU guest device with share-rw=off locks it.
    public static let rawReadWrite = PermissionRequest(held: [.consistentRead, .write], unshared: [.write])
    /// A raw image open read-only: it caches nothing, so it minds no writer.
    public static let rawReadOnly = PermissionRequest(held: [.consistentRead], unshared: [])
    /// QEMU's -U (force-share): reading beside a writer, refusing nothing.
    public static let forceShareReadOnly = PermissionRequest(held: [.consistentRead], unshared: [])

    /// Whether an open asking for `self` can coexist with one holding `other`.
    public func isCompatible(with other: PermissionRequest) -> Bool {
        held.isDisjoint(with: other.unshared) && unshared.isDisjoint(with: other.held)
    }

    /// In the words `blk locks` uses for a holder.
    public var description: String { "holds \(held), does not share \(unshared)" }
}

/// The bytes BlockLayer locks, in one place. Bytes 0–99 are left alone (libvirt's virtlockd
/// uses byte 0); 100–299 are QEMU's; 300–309 are ours.
public enum LockByte {
    /// The transaction lock: short critical sections, shared for readers, exclusive for a commit.
    public static let transaction: Int64 = 300

    /// What a byte means, in words, for `blk locks` and error messages.
    public static func meaning(of byte: Int64, kind: LockKind) -> String {
        if byte == transaction { return "transaction lock \(kind)" }
        if let permission = permission(heldBy: byte) { return "holds \(permission.qemuName)" }
        if let permission = permission(unsharedBy: byte) { return "does not share \(permission.qemuName)" }
        return "byte \(byte) \(kind)"
    }

    static func permission(heldBy byte: Int64) -> ImagePermissions? {
        (100...103).contains(byte) ? ImagePermissions.each[Int(byte - 100)] : nil
    }

    static func permission(unsharedBy byte: Int64) -> ImagePermissions? {
        (200...203).contains(byte) ? ImagePermissions.each[Int(byte - 200)] : nil
    }
}
