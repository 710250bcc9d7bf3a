// The permission-lock truth table (interface.md §2) against the real qemu-io and qemu-img, in
// the spirit of QEMU's iotest 153: for every pair of opens of one image, whoever opens second is
// refused exactly when the first holds a permission the second refuses to share, or refuses one
// the second wants — with QEMU's words on both sides, and blk naming QEMU's pid.
import BlockLocking
import Foundation
import Testing

/// One kind of open, as blk takes it and as the same kind of qemu-io open takes it.
struct OpenKind: Sendable, CustomTestStringConvertible {
    var name: String
    var format: String
    var blkAccess: String
    var blk: PermissionRequest
    var qemuArguments: [String]
    /// What qemu-io really locks. The same as blk's, except that qemu-io's raw read-write open
    /// shares write (its BlockBackend shares everything); a QEMU guest device does not, and
    /// interface.md's table follows the device.
    var qemu: PermissionRequest

    var testDescription: String { name }

    static let qcow2Kinds = [
        OpenKind(name: "qcow2 read-write", format: "qcow2", blkAccess: "rw", blk: .qcow2ReadWrite,
                 qemuArguments: ["-f", "qcow2"], qemu: .qcow2ReadWrite),
        OpenKind(name: "qcow2 read-only", format: "qcow2", blkAccess: "ro", blk: .qcow2ReadOnly,
                 qemuArguments: ["-r", "-f", "qcow2"], qemu: .qcow2ReadOnly),
        OpenKind(name: "qcow2 read-only -U", format: "qcow2", blkAccess: "ro", blk: .forceShareReadOnly,
                 qemuArguments: ["-r", "-U", "-f", "qcow2"], qemu: .forceShareReadOnly),
    ]
    static let rawKinds = [
        OpenKind(name: "raw read-write", format: "raw", blkAccess: "rw", blk: .rawReadWrite,
                 qemuArguments: ["-f", "raw"], qemu: PermissionRequest(held: [.consistentRead, .write], unshared: [])),
        OpenKind(name: "raw read-only", format: "raw", blkAccess: "ro", blk: .rawReadOnly,
                 qemuArguments: ["-r", "-f", "raw"], qemu: .rawReadOnly),
        OpenKind(name: "raw read-only -U", format: "raw", blkAccess: "ro", blk: .forceShareReadOnly,
                 qemuArguments: ["-r", "-U", "-f", "raw"], qemu: .forceShareReadOnly),
    ]
    static let interfaceTable = [qcow2Kinds[0], qcow2Kinds[1], rawKinds[0], rawKinds[1], rawKinds[2]]
}

/// QEMU's message (raw_check_lock_bytes) for an open asking `opener` beside one holding
/// `holder`, or nil when the two can coexist.
func expectedConflict(opener: PermissionRequest, holder: PermissionRequest) -> String? {
    for permission in ImagePermissions.each where opener.held.contains(permission) && holder.unshared.contains(permission) {
        return "Failed to get \"\(permission.qemuName)\" lock"
    }
    for permission in ImagePermissions.each where opener.unshared.contains(permission) && holder.held.contains(permission) {
        return "Failed to get shared \"\(permission.qemuName)\" lock"
    }
    return nil
}

func fixtureListing(_ permissions: ImagePermissions) -> String {
    permissions.isEmpty ? "-" : permissions.jsonNames.joined(separator: ",")
}

extension LineProcess {
    /// Opens `path` in the fixture as `kind` opens it; returns the answer to the permission step.
    func openAs(_ kind: OpenKind, _ path: String) throws -> String {
        let handle = try open(path, kind.blkAccess)
        return try request("perms \(handle) \(fixtureListing(kind.blk.held)) \(fixtureListing(kind.blk.unshared))")
    }
}

/// A qemu-io that holds `path` open as `kind` until it is finished.
func qemuHolder(_ kind: OpenKind, _ path: String) throws -> LineProcess {
    let holder = try LineProcess("/usr/bin/qemu-io", kind.qemuArguments + [path])
    try waitUntilLocked(path, kind.qemu, by: holder)
    return holder
}

/// Waits until the kernel lists locks on every byte `request` stands for, taken by `holder`.
func waitUntilLocked(_ path: String, _ request: PermissionRequest, by holder: LineProcess) throws {
    let bytes = request.held.members.map(\.heldByte) + request.unshared.members.map(\.unsharedByte)
    let locked = try eventually {
        let records = try kernelLocks(on: path)
        return bytes.allSatisfy { byte in records.contains { $0.covers(byte: byte) } }
    }
    guard locked else { throw TestFailure("\(holder.arguments) did not lock \(bytes); stderr: \(holder.stderr)") }
}

@Suite("QEMU interoperability: the permission-lock truth table")
struct QEMUInteropTests {
    static let qcow2Pairs = OpenKind.qcow2Kinds.flatMap { first in OpenKind.qcow2Kinds.map { (first, $0) } }
    static let rawPairs = OpenKind.rawKinds.flatMap { first in OpenKind.rawKinds.map { (first, $0) } }

    @Test("blk holds, qemu-io opens", arguments: qcow2Pairs + rawPairs)
    func blkHoldsQEMUOpens(holding: OpenKind, opening: OpenKind) throws {
        let scratch = try Scratch()
        let image = holding.format == "qcow2" ? try scratch.qcow2Image() : try scratch.rawImage()
        let holder = try LineProcess.fixture()
        #expect(try holder.openAs(holding, image) == "ok")

        let opened = try run("/usr/bin/qemu-io", opening.qemuArguments + ["-c", "read 0 512", image])
        if let conflict = expectedConflict(opener: opening.qemu, holder: holding.blk) {
            #expect(opened.status == 1)
            #expect(opened.stderr == "qemu-io: can't open device \(image): \(conflict)\nIs another process using the image [\(image)]?\n")
        } else {
            #expect(opened.status == 0, "\(opened)")
        }
    }

    @Test("qemu-io holds, blk opens", arguments: qcow2Pairs + rawPairs)
    func qemuHoldsBlkOpens(holding: OpenKind, opening: OpenKind) throws {
        let scratch = try Scratch()
        let image = holding.format == "qcow2" ? try scratch.qcow2Image() : try scratch.rawImage()
        let holder = try qemuHolder(holding, image)
        defer { _ = try? holder.finish() }
        let opener = try LineProcess.fixture()
        let qemuLocks = try kernelLocks(on: image)

        let answer = try opener.openAs(opening, image)
        if let conflict = expectedConflict(opener: opening.blk, holder: holding.qemu) {
            let lines = answer.components(separatedBy: "\\n")
            #expect(lines.first == "err conflict \(conflict)")
            #expect(lines.dropFirst().first == "Is another process using the image [\(image)]?")
            #expect(lines.dropFirst(2).first?.hasPrefix("held by pid \(holder.pid) (qemu-io): holds consistent read") == true, "\(answer)")
            #expect(try kernelLocks(on: image) == qemuLocks, "a refused open rolls back what it took")
        } else {
            #expect(answer == "ok")
        }
    }

    @Test("blk beside blk follows interface.md's table", arguments: OpenKind.interfaceTable, OpenKind.interfaceTable)
    func blkBesideBlk(holding: OpenKind, opening: OpenKind) throws {
        let scratch = try Scratch()
        let image = try scratch.rawImage()
        let holder = try LineProcess.fixture(), opener = try LineProcess.fixture()
        #expect(try holder.openAs(holding, image) == "ok")
        let answer = try opener.openAs(opening, image)
        if let conflict = expectedConflict(opener: opening.blk, holder: holding.blk) {
            #expect(answer.hasPrefix("err conflict \(conflict)\\nIs another process using the image [\(image)]?\\nheld by pid \(holder.pid) (blk-lock-fixtur)"))
        } else {
            #expect(answer == "ok")
        }
    }

    @Test("qemu-img info is refused beside a blk writer, and -U reads beside it")
    func qemuImgBesideBlkWriter() throws {
        let scratch = try Scratch()
        let image = try scratch.qcow2Image()
        let holder = try LineProcess.fixture()
        #expect(try holder.openAs(OpenKind.qcow2Kinds[0], image) == "ok")
        let refused = try run("/usr/bin/qemu-img", ["info", image])
        #expect(refused.status == 1)
        #expect(refused.stderr == "qemu-img: Could not open '\(image)': Failed to get shared \"write\" lock\nIs another process using the image [\(image)]?\n")
        let forced = try run("/usr/bin/qemu-img", ["info", "-U", image])
        #expect(forced.status == 0, "\(forced)")
    }

    @Test("the transaction lock is invisible to QEMU, and QEMU's locks do not stop it")
    func transactionLockBesideQEMU() throws {
        let scratch = try Scratch()
        let image = try scratch.qcow2Image()
        let writer = try qemuHolder(OpenKind.qcow2Kinds[0], image)
        defer { _ = try? writer.finish() }
        let held = try run(blkPath, ["hold", "--exclusive", "--no-wait", image, "--", "/usr/bin/qemu-img", "info", "-U", image])
        #expect(held.status == 0, "\(held)")

        let holder = try LineProcess.fixture()
        let handle = try holder.open(image)
        #expect(try holder.request("lock \(handle) exclusive") == "ok")
        let reader = try run("/usr/bin/qemu-io", ["-r", "-U", "-f", "qcow2", "-c", "read 0 512", image])
        #expect(reader.status == 0, "\(reader)")
    }
}
