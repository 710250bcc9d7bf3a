// The pure parts, on literal inputs: the kernel's lock lines, the words for bytes, and the
// compatibility rule the truth table is built on.
import Testing
@testable import BlockLocking

@Suite("lock records and their words")
struct LockRecordTests {
    let file = FileIdentity(deviceMajor: 0xfe, deviceMinor: 0x01, inode: 1234)

    @Test("a /proc/locks text: granted OFD and POSIX locks, a waiter, other files left out")
    func parsesProcLocks() {
        let text = """
            1: OFDLCK  ADVISORY  READ  -1 fe:01:1234 100 101
            2: POSIX  ADVISORY  WRITE 4567 fe:01:1234 0 EOF
            2: -> OFDLCK ADVISORY  WRITE -1 fe:01:1234 300 300
            3: OFDLCK  ADVISORY  READ  -1 fe:01:9999 100 100
            4: FLOCK  ADVISORY  WRITE 77 08:02:1234 0 EOF
            garbage line
            """
        let records = LockRecord.records(in: text, on: file)
        #expect(records.count == 3)
        #expect(records[0].family == "OFDLCK" && records[0].kind == .shared && records[0].reportedPID == -1)
        #expect(records[0].firstByte == 100 && records[0].lastByte == 101 && !records[0].isWaiting)
        #expect(records[0].covers(byte: 101) && !records[0].covers(byte: 102))
        #expect(records[1].lastByte == nil && records[1].covers(byte: 1 << 40) && records[1].reportedPID == 4567)
        #expect(records[2].isWaiting && records[2].kind == .exclusive)
    }

    @Test("hostile lines are refused, not trusted", arguments: [
        "1: OFDLCK ADVISORY READ -1 fe:01:1234 300 100",
        "1: OFDLCK ADVISORY READ -1 fe:01:1234 -9223372036854775808 5",
        "1: OFDLCK ADVISORY READ -1 fe:01:1234 100",
        "1: OFDLCK ADVISORY SHARED -1 fe:01:1234 100 100",
        "1: OFDLCK ADVISORY READ x fe:01:1234 100 100",
        "1: OFDLCK ADVISORY READ -1 fe:01 100 100",
        "",
    ])
    func refusesHostileLines(line: String) {
        #expect(LockRecord(line: Substring(line)) == nil)
    }

    @Test("fdinfo lock lines")
    func parsesFdinfo() {
        let text = "pos:\t0\nflags:\t02100002\nmnt_id:\t25\nino:\t1234\nlock:\t1: OFDLCK ADVISORY READ -1 fe:01:1234 201 201\n"
        let records = LockRecord.records(in: text, on: file)
        #expect(records.map(\.firstByte) == [201])
    }

    @Test("bytes in words, grouped by verb")
    func meanings() {
        let lines = LockRecord.records(in: """
            1: OFDLCK ADVISORY READ -1 fe:01:1234 100 101
            2: OFDLCK ADVISORY READ -1 fe:01:1234 103 103
            3: OFDLCK ADVISORY READ -1 fe:01:1234 201 201
            4: OFDLCK ADVISORY WRITE -1 fe:01:1234 300 300
            5: POSIX ADVISORY WRITE 9 fe:01:1234 0 EOF
            """, on: file)
        let holder = LockHolder(pid: 4121, program: "qemu-system-x86", locks: lines)
        #expect(holder.summary == "pid 4121 (qemu-system-x86): holds consistent read, write, resize; does not share write; transaction lock exclusive; whole file exclusive (posix lock)")
    }

    @Test("the compatibility rule matches interface.md's table", arguments: [
        (PermissionRequest.qcow2ReadWrite, PermissionRequest.qcow2ReadWrite, false),
        (.qcow2ReadWrite, .qcow2ReadOnly, false),
        (.qcow2ReadWrite, .forceShareReadOnly, true),
        (.qcow2ReadOnly, .qcow2ReadOnly, true),
        (.rawReadWrite, .rawReadOnly, true),
        (.rawReadWrite, .rawReadWrite, false),
        (.rawReadOnly, .forceShareReadOnly, true),
    ])
    func compatibility(first: PermissionRequest, second: PermissionRequest, compatible: Bool) {
        #expect(first.isCompatible(with: second) == compatible)
        #expect(second.isCompatible(with: first) == compatible)
    }

    @Test("QEMU's byte numbers and names")
    func bytes() {
        #expect(ImagePermissions.each.map(\.heldByte) == [100, 101, 102, 103])
        #expect(ImagePermissions.each.map(\.unsharedByte) == [200, 201, 202, 203])
        #expect(ImagePermissions.each.map(\.qemuName) == ["consistent read", "write", "write unchanged", "resize"])
        #expect(LockByte.meaning(of: 300, kind: .shared) == "transaction lock shared")
        #expect(LockByte.meaning(of: 0, kind: .exclusive) == "byte 0 exclusive")
    }

    @Test("deadlines: zero has passed at once, never does not pass, huge ones do not overflow")
    func deadlines() {
        #expect(LockDeadline.after(.zero).hasPassed)
        #expect(!LockDeadline.never.hasPassed)
        #expect(!LockDeadline.after(.seconds(Int64.max)).hasPassed)
        #expect(LockDeadline.after(.seconds(-5)).hasPassed)
        #expect(LockDeadline.after(seconds: 1e300) == .never)
        #expect(LockDeadline.after(.seconds(9_223_372_000)) == .never)
        #expect(LockDeadline.after(seconds: .nan) == .never)
        #expect(LockDeadline.after(seconds: -1).hasPassed)
        #expect(!LockDeadline.after(seconds: 60).hasPassed)
    }
}
