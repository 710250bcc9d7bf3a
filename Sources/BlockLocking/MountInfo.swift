// MountInfo: one line of /proc/self/mountinfo (proc(5)), and what it means for locks. OFD and
// POSIX locks on a kernel NFS mount become NLM or NFSv4 locks that other hosts see — unless the
// mount says `nolock` or `local_lock=all|posix`, where the client keeps them to itself and they
// protect nothing across hosts, silently. The parser is pure, so tests can feed it any mount table.
import SystemPackage

/// One mount, read to tell whether an image's locks reach the other hosts that share its storage
/// (an NFS mount with `nolock` keeps them here), and to name the file system in /proc/locks'
/// terms.
public struct MountInfo: Sendable, Hashable {
    /// The id /proc/self/fdinfo gives for a descriptor's mount: how an image's mount is found.
    public var mountID: Int
    /// The device major number as /proc/locks prints it, which fstat's st_dev is not on btrfs.
    public var deviceMajor: UInt32
    /// The device minor number, with `deviceMajor` the device of the file system's superblock.
    public var deviceMinor: UInt32
    /// Where the file system is mounted, for messages.
    public var mountPoint: String
    /// "nfs", "nfs4", "ext4", …: which rules for locks across hosts apply.
    public var fileSystemType: String
    /// The mounted source ("server:/export" for NFS), for messages.
    public var source: String
    /// Per-mount options (`rw,relatime`) and the file system's own (`vers=3,…,nolock,…`).
    public var mountOptions: [String]
    /// The file system's own options (`vers=3,…,nolock`), where NFS says whether locks leave
    /// the host.
    public var superOptions: [String]

    /// Every well-formed line of a mountinfo text; others are skipped.
    public static func parse(_ text: String) -> [MountInfo] {
        Substring(text).byteLines.compactMap(parseLine)
    }

    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    // (1)(2)(3)  (4)   (5)   (6)       (7…)     (8)(9)   (10)      (11)
    private static func parseLine(_ line: Substring) -> MountInfo? {
        let fields = line.splitBytes { $0 == UInt8(ascii: " ") }
        guard let separator = fields.firstIndex(of: "-"), separator >= 6, fields.count >= separator + 3,
              let mountID = Int(fields[0]) else { return nil }
        let device = fields[2].splitBytes { $0 == UInt8(ascii: ":") }
        guard device.count == 2, let major = UInt32(device[0]), let minor = UInt32(device[1]) else { return nil }
        return MountInfo(mountID: mountID, deviceMajor: major, deviceMinor: minor, mountPoint: unescape(fields[4]),
                         fileSystemType: String(fields[separator + 1]), source: unescape(fields[separator + 2]),
                         mountOptions: fields[5].split(separator: ",").map(String.init),
                         superOptions: fields.count > separator + 3 ? fields[separator + 3].split(separator: ",").map(String.init) : [])
    }

    /// The kernel writes space, tab, newline and backslash in paths as octal escapes (`\040`).
    private static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        var rest = Array(field.utf8)[...]
        while let byte = rest.popFirst() {
            if byte == UInt8(ascii: "\\"), rest.count >= 3, let value = UInt8(String(decoding: rest.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                rest = rest.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The mount a descriptor's file lives on, found by the mount id in its fdinfo.
    public static func of(_ descriptor: FileDescriptor) -> MountInfo? {
        guard let fdinfo = readProcFile("/proc/self/fdinfo/\(descriptor.rawValue)"),
              let mountLine = Substring(fdinfo).byteLines.first(where: { $0.hasPrefix("mnt_id:") }),
              let mountID = mountLine.byteFields.last.flatMap({ Int($0) }),
              let mountinfo = readProcFile("/proc/self/mountinfo") else { return nil }
        // Only the one line is parsed: a container host's table runs to thousands of mounts.
        let prefix = "\(mountID) "
        return Substring(mountinfo).byteLines.first { $0.hasPrefix(prefix) }.flatMap(parseLine)
    }

    /// Kernel NFS clients are the one file system whose locks may or may not reach other hosts.
    public var isNFS: Bool { fileSystemType == "nfs" || fileSystemType == "nfs4" }

    /// Why locks taken on this mount stay on this host, or nil when they reach the others that
    /// share the storage (or the storage is this host's alone).
    public var locksStayOnThisHost: String? {
        guard isNFS else { return nil }
        if superOptions.contains("nolock") { return "\(fileSystemType) mount \(mountPoint) (\(source)) has nolock" }
        if let local = superOptions.first(where: { $0 == "local_lock=all" || $0 == "local_lock=posix" }) {
            return "\(fileSystemType) mount \(mountPoint) (\(source)) has \(local)"
        }
        return nil
    }
}
