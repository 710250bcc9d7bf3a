// LockBenchmark: `blk bench lock`. Each of our operations runs beside the same operation done
// with raw fcntl calls, interleaved round by round so drift on a noisy machine hits both.
//
//   uncontended pair   TransactionLock acquire+release     vs  F_OFD_SETLK WRLCK + UNLCK
//   nested acquire     acquire while already held (no syscall; no baseline)
//   permission open    ImageLocks.setPermissions(qcow2 rw) and back to none
//                                                          vs  the same 15 fcntl calls by hand
//   hand-over          holder releases → waiter in another process has it, both ways
import BlockLocking
import CLinuxLocking
import FoundationEssentials
import Glibc
import SystemPackage

package struct LockBenchmark {
    package var directory: String
    package var iterations: Int
    package var handoffs: Int
    package var progress: any BenchmarkProgress

    package init(directory: String, iterations: Int, handoffs: Int, progress: any BenchmarkProgress) {
        self.directory = directory
        self.iterations = iterations
        self.handoffs = handoffs
        self.progress = progress
    }

    package struct Results: Encodable {
        package var uncontendedPairNs: Double
        package var baselineUncontendedPairNs: Double
        package var nestedAcquireNs: Double
        package var permissionOpenNs: Double
        package var baselinePermissionOpenNs: Double
        package var handoffMedianUs: Double
        package var handoffP99Us: Double
        package var baselineHandoffMedianUs: Double
        package var baselineHandoffP99Us: Double
    }

    package func run() throws -> Results {
        let path = URL(fileURLWithPath: directory).appendingPathComponent("blk-bench-lock-\(getpid()).img").path
        guard FileManager.default.createFile(atPath: path, contents: Data(count: 4096)) else {
            throw LockingError(.ioError, "could not create \(path)", path: path)
        }
        defer { unlink(path) }
        let ours = try ImageLocks(descriptor: try open(path), path: path, mode: .on, writable: true)
        let raw = try open(path)
        defer { try? ours.descriptor.close(); try? raw.close() }

        let rounds = 7
        var pair: [Double] = [], basePair: [Double] = [], nested: [Double] = [], permission: [Double] = [], basePermission: [Double] = []
        for round in 0..<rounds {
            progress.update(Double(round) / Double(rounds) * 0.5, "uncontended, nested, permission open")
            pair.append(nanosecondsPerIteration(iterations) {
                try! ours.transaction.acquire(.exclusive)
                try! ours.transaction.release(.exclusive)
            })
            basePair.append(nanosecondsPerIteration(iterations) {
                rawLock(raw, F_WRLCK, LockByte.transaction)
                rawLock(raw, F_UNLCK, LockByte.transaction)
            })
            try ours.transaction.acquire(.exclusive)
            nested.append(nanosecondsPerIteration(iterations) { try! ours.transaction.acquire(.shared) })
            for _ in 0..<iterations { try ours.transaction.release(.shared) }
            try ours.transaction.release(.exclusive)
            let permissionIterations = max(1, iterations / 8)
            permission.append(nanosecondsPerIteration(permissionIterations) {
                try! ours.setPermissions(.qcow2ReadWrite)
                try! ours.setPermissions(.none)
            })
            basePermission.append(nanosecondsPerIteration(permissionIterations) { rawPermissionOpen(raw) })
        }

        let (handoff, baseHandoff) = try measureHandoffs(path: path)
        progress.finish()
        return Results(
            uncontendedPairNs: pair.median, baselineUncontendedPairNs: basePair.median,
            nestedAcquireNs: nested.median,
            permissionOpenNs: permission.median, baselinePermissionOpenNs: basePermission.median,
            handoffMedianUs: handoff.median / 1000, handoffP99Us: handoff.percentile(0.99) / 1000,
            baselineHandoffMedianUs: baseHandoff.median / 1000, baselineHandoffP99Us: baseHandoff.percentile(0.99) / 1000)
    }

    private func open(_ path: String) throws -> FileDescriptor {
        try FileDescriptor.open(path, .readWrite, options: [.closeOnExec])
    }

    /// Alternates our hand-over and the raw one, each with a peer process of its own that waits
    /// in the kernel while this process holds the lock; the latency runs from just before the
    /// holder's release to just after the waiter's acquire returns (CLOCK_MONOTONIC is one clock
    /// for all processes).
    private func measureHandoffs(path: String) throws -> (ours: [Double], raw: [Double]) {
        let oursPeer = try HandoffPeer(path: path, mode: .ours)
        let rawPeer = try HandoffPeer(path: path, mode: .raw)
        defer { oursPeer.stop(); rawPeer.stop() }
        let holder = try ImageLocks(descriptor: try open(path), path: path, mode: .on, writable: true)
        let rawHolder = try open(path)
        defer { try? holder.descriptor.close(); try? rawHolder.close() }
        let scan = LockHolderScan(file: try LockHolderScan.identity(of: rawHolder).get())

        var ours: [Double] = [], raw: [Double] = []
        func handOverOurs() throws {
            try holder.transaction.acquire(.exclusive)
            oursPeer.startWaiting()
            try awaitWaiter(scan, oursPeer)
            let released = currentMonotonicNanoseconds()
            try holder.transaction.release(.exclusive)
            ours.append(Double(try oursPeer.acquiredAt() - released))
        }
        func handOverRaw() throws {
            rawLock(rawHolder, F_WRLCK, LockByte.transaction)
            rawPeer.startWaiting()
            try awaitWaiter(scan, rawPeer)
            let released = currentMonotonicNanoseconds()
            rawLock(rawHolder, F_UNLCK, LockByte.transaction)
            raw.append(Double(try rawPeer.acquiredAt() - released))
        }
        for iteration in 0..<handoffs {
            if iteration % 50 == 0 { progress.update(0.5 + 0.5 * Double(iteration) / Double(handoffs), "hand-over") }
            // Alternate which goes first, so neither always runs on a machine the other just warmed.
            if iteration.isMultiple(of: 2) {
                try handOverOurs()
                try handOverRaw()
            } else {
                try handOverRaw()
                try handOverOurs()
            }
        }
        return (ours, raw)
    }
}

/// Spins (outside the timed window) until the peer's request waits in the kernel; gives up after
/// ten seconds or when the peer has died, rather than spinning for ever.
private func awaitWaiter(_ scan: LockHolderScan, _ peer: HandoffPeer) throws {
    let deadline = currentMonotonicNanoseconds() + 10_000_000_000
    while scan.waiters().isEmpty {
        guard peer.isRunning, currentMonotonicNanoseconds() < deadline else {
            throw LockingError(.ioError, "the hand-over peer never waited for the lock (it \(peer.isRunning ? "is stuck" : "exited"))")
        }
        sched_yield()
    }
}

/// One raw F_OFD_SETLK (F_RDLCK, F_WRLCK or F_UNLCK) on one byte: the baseline's building block.
@inline(__always)
func rawLock(_ descriptor: FileDescriptor, _ type: Int32, _ byte: Int64, command: Int32 = Int32(blk_F_OFD_SETLK)) {
    var lock = flock()
    lock.l_type = Int16(type)
    lock.l_whence = Int16(SEEK_SET)
    lock.l_start = Int(byte)
    lock.l_len = 1
    _ = blk_fcntl_flock(descriptor.rawValue, command, &lock)
}

/// What QEMU does to open a qcow2 image read-write, by hand: lock the held and unshared bytes,
/// probe the other side of each pair, then (closing) unlock them.
@inline(__always)
func rawPermissionOpen(_ descriptor: FileDescriptor) {
    let request = PermissionRequest.qcow2ReadWrite
    for permission in ImagePermissions.each {
        if request.held.contains(permission) { rawLock(descriptor, F_RDLCK, permission.heldByte) }
        if request.unshared.contains(permission) { rawLock(descriptor, F_RDLCK, permission.unsharedByte) }
    }
    for permission in ImagePermissions.each where request.held.contains(permission) {
        rawLock(descriptor, F_WRLCK, permission.unsharedByte, command: Int32(blk_F_OFD_GETLK))
    }
    for permission in ImagePermissions.each where request.unshared.contains(permission) {
        rawLock(descriptor, F_WRLCK, permission.heldByte, command: Int32(blk_F_OFD_GETLK))
    }
    for permission in ImagePermissions.each {
        if request.held.contains(permission) { rawLock(descriptor, F_UNLCK, permission.heldByte) }
        if request.unshared.contains(permission) { rawLock(descriptor, F_UNLCK, permission.unsharedByte) }
    }
}
