// LeaseHostNames: the names of a lockspace's hosts, which sanlock's API does not return. `blk
// lease join` records this host's name (--host-name, default the host name) in the lease folder;
// failing that, the name comes from the host's delta lease — the leader record in sector
// host_id-1 of the lockspace, whose resource_name field holds what the host's daemon announces
// (sanlock daemon -e NAME).
import Glibc
import Posix
import SystemPackage

struct LeaseHostNames {
    let settings: LeaseSettings

    /// sanlock's leader record (leader.h), little-endian on disk.
    static let deltaMagic: UInt32 = 0x1221_2010
    static let resourceNameOffset = 104
    static let sectorSize = 512

    func name(of hostID: UInt64) -> String? {
        guard hostID >= 1, hostID <= 2000 else { return nil }
        if settings.layout == .directory, let recorded = readRecorded(hostID) { return recorded }
        guard let sector = readSector(Int64(hostID - 1) * Int64(Self.sectorSize)) else { return nil }
        return Self.hostName(inDeltaLease: sector)
    }

    /// The file in the lease folder naming host `hostID`.
    static func recordPath(_ settings: LeaseSettings, _ hostID: UInt64) -> String {
        settings.location + "/" + settings.lockspace + ".host-\(hostID)"
    }

    /// Records this host's name for the others to show (a file per host: no host writes another's).
    static func record(_ name: String, hostID: UInt64, settings: LeaseSettings) throws(LockingError) {
        guard settings.layout == .directory else { return }
        let path = recordPath(settings, hostID)
        let temporary = path + ".\(getpid()).new"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw LockingError(.ioError, "Could not record this host's name in '\(settings.location)': \(Errno.current)", path: path)
        }
        let bytes = Array((name + "\n").utf8)
        let written = bytes.withUnsafeBytes { FileDescriptor(rawValue: descriptor).writeFully($0) }
        close(descriptor)
        guard case .success = written, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw LockingError(.ioError, "Could not record this host's name in '\(settings.location)': \(Errno.current)", path: path)
        }
    }

    static func hostName(inDeltaLease sector: [UInt8]) -> String? {
        guard sector.count >= resourceNameOffset + 48 else { return nil }
        let magic = sector[0..<4].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
        guard magic == deltaMagic else { return nil }
        let name = String(decoding: sector[resourceNameOffset..<resourceNameOffset + 48].prefix { $0 != 0 }, as: UTF8.self)
        return name.isEmpty ? nil : name
    }

    private func readRecorded(_ hostID: UInt64) -> String? {
        guard let text = readProcFile(Self.recordPath(settings, hostID)) else { return nil }
        let name = String(text.prefix { $0 != "\n" })
        return name.isEmpty ? nil : name
    }

    /// One sector of the lockspace, around the page cache where the storage allows it: another
    /// host wrote it.
    private func readSector(_ offset: Int64) -> [UInt8]? {
        let path = settings.lockspacePath
        var descriptor = open(path, O_RDONLY | O_CLOEXEC | FileDescriptor.OpenOptions.direct.rawValue)
        if descriptor < 0 { descriptor = open(path, O_RDONLY | O_CLOEXEC) }
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { buffer.deallocate() }
        let count = switch FileDescriptor(rawValue: descriptor).readFully(at: offset, into: buffer) {
        case .success: buffer.count
        case .failure(let short): short.transferred // the lockspace may end within the page
        }
        guard count >= Self.sectorSize else { return nil }
        return Array(buffer[0..<Self.sectorSize])
    }
}
