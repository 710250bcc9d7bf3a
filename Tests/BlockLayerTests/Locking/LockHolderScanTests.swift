// LockHolderScan on a busy host. The kernel prints /proc/locks a page per read(2), each page from
// the lock list as it then is, so another process taking and dropping locks between two pages
// prints lines twice or not at all. One of our own lines printed twice looked like a second
// holder that no process owns: "held by an unknown process" on an image nobody else had open.
import Foundation
import Glibc
import SystemPackage
import Testing
@testable import BlockLocking

@Suite("who holds a lock, on a busy host")
struct LockHolderScanTests {
    @Test("another process's lock churn never turns our own locks into an unknown holder")
    func churnInventsNoHolder() throws {
        let scratch = try Scratch()
        let image = try scratch.rawImage()
        let descriptor = try FileDescriptor.open(image, .readWrite, options: [.closeOnExec])
        defer { try? descriptor.close() }
        let locker = ByteLocker(descriptor: descriptor, flavor: .openFileDescription)

        // A churner on each core: the kernel keeps a lock list per CPU and prints them in turn.
        let script = testsDirectory.appendingPathComponent("Fixtures/lock_churn.py").path
        let churners = try (0..<2).map { index in
            try LineProcess("/usr/bin/python3", [script, scratch.directory + "/churn\(index)", "300", "60"])
        }
        defer { for churner in churners { _ = try? churner.finish() } }
        for churner in churners { #expect(try churner.nextLine() == "ready") }
        // The test can fail only if /proc/locks takes several reads.
        let pages = (readProcFile("/proc/locks")?.utf8.count ?? 0) / 4096
        #expect(pages >= 3, "/proc/locks spans \(pages) pages")

        let scan = LockHolderScan(file: try LockHolderScan.identity(of: descriptor).get(), excluding: descriptor)
        // Under churn each read of /proc/locks waits for the kernel's lock list (an RCU grace
        // period a page): 250 scans take 12 s alone on 2 cores and minutes beside the other
        // suites, so the scans stop at 15 s as well. Before the fix, 250 found 2 or 3 holders.
        var invented: [LockHolder] = []
        var scans = 0
        let stop = ContinuousClock.now + .seconds(15)
        while scans < 250, ContinuousClock.now < stop {
            scans += 1
            // A read-only open's locks, as `blk info` holds them while it asks who else does; taken
            // afresh each time, as each open does, so they land among the churn at a new place.
            for byte: Int64 in [100, 201, 203] { #expect(try locker.tryLock(.shared, byte: byte).get() == .acquired) }
            invented += scan.scan().holders
            for byte: Int64 in [100, 201, 203] { try locker.unlock(byte: byte).get() }
        }
        #expect(invented.isEmpty, "\(invented.count) holders found in \(scans) scans, the first: \(invented.first.map(\.summary) ?? "")")
    }
}
