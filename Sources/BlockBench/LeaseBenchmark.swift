// LeaseBenchmark: the lease rows of `blk bench lock`, when a lease area is configured. Our
// ImageLease (resource lookup cached, one registration per process) acquires and releases an
// exclusive sanlock lease, alternating with the same calls made straight to the C API on a
// registration of their own — the baseline. Every acquire is a disk-paxos round on the lease
// area, so both sides are dominated by its I/O; the ratio says what our layer adds.
import BlockLocking
import CSanlock
import FoundationEssentials
import Glibc

package struct LeaseBenchmark {
    package var settings: LeaseSettings
    package var directory: String
    package var rounds: Int

    package init(settings: LeaseSettings, directory: String, rounds: Int) {
        self.settings = settings
        self.directory = directory
        self.rounds = rounds
    }

    package struct Results: Encodable {
        package var lockspace: String
        package var acquireMedianMs: Double
        package var releaseMedianMs: Double
        package var baselineAcquireMedianMs: Double
        package var baselineReleaseMedianMs: Double
    }

    package func run() throws -> Results {
        // One image name for every run: each new name takes a lease slot in the area for good.
        let path = URL(fileURLWithPath: directory).appendingPathComponent("blk-bench-lease.img").path
        if access(path, F_OK) != 0 {
            guard FileManager.default.createFile(atPath: path, contents: Data(count: 4096)) else {
                throw LockingError(.ioError, "could not create \(path)", path: path)
            }
        }
        let engine = SanlockEngine(settings: settings)
        let image = try SanlockEngine.leasedImage(path: path)
        let lease = ImageLease(engine: engine, image: image)
        let location = try engine.leaseLocation(of: image)

        let socket = blk_sanlock_register()
        guard socket >= 0 else { throw LockingError(.leaseUnavailable, "the baseline could not register with sanlock (\(socket))") }
        defer { close(socket) }
        var resource = blk_sanlk_resource()
        SanlockLibrary.copy(settings.lockspace, into: &resource.lockspace_name)
        SanlockLibrary.copy(image.resourceName, into: &resource.name)
        SanlockLibrary.copy(location.path, into: &resource.disks.path)
        resource.disks.offset = location.offset
        resource.num_disks = 1

        var acquire: [Double] = [], release: [Double] = [], baseAcquire: [Double] = [], baseRelease: [Double] = []
        func ours() throws {
            var start = currentMonotonicNanoseconds()
            try lease.set(.exclusive)
            acquire.append(Double(currentMonotonicNanoseconds() - start))
            start = currentMonotonicNanoseconds()
            try lease.set(nil)
            release.append(Double(currentMonotonicNanoseconds() - start))
        }
        func baseline() throws {
            var start = currentMonotonicNanoseconds()
            var result = blk_sanlock_acquire(socket, -1, UInt32(BLK_SANLK_ACQUIRE_OWNER_NOWAIT), &resource, nil)
            baseAcquire.append(Double(currentMonotonicNanoseconds() - start))
            guard result == 0 else { throw LockingError(.conflict, "the baseline's acquire failed (\(result)): is the lease held?") }
            start = currentMonotonicNanoseconds()
            result = blk_sanlock_release(socket, -1, 0, &resource)
            baseRelease.append(Double(currentMonotonicNanoseconds() - start))
            guard result == 0 else { throw LockingError(.ioError, "the baseline's release failed (\(result))") }
        }
        try ours() // warms the registration and the cached offset, as any open after the first
        acquire.removeAll()
        release.removeAll()
        for round in 0..<rounds {
            if round.isMultiple(of: 2) { try ours(); try baseline() } else { try baseline(); try ours() }
        }
        return Results(lockspace: settings.lockspace,
                       acquireMedianMs: acquire.median / 1e6, releaseMedianMs: release.median / 1e6,
                       baselineAcquireMedianMs: baseAcquire.median / 1e6, baselineReleaseMedianMs: baseRelease.median / 1e6)
    }
}
