// The transaction lock across real processes: every holder and waiter is its own
// blk-lock-fixture process, and waits are proved to be in the kernel through /proc/locks.
import Foundation
import Testing

@Suite("transaction lock across processes")
struct TransactionLockTests {
    let scratch: Scratch
    let image: String

    init() throws {
        scratch = try Scratch()
        image = try scratch.rawImage()
    }

    @Test("exclusive keeps out exclusive and shared, in another process")
    func exclusiveExcludesOthers() throws {
        let holder = try LineProcess.fixture(), other = try LineProcess.fixture()
        let held = try holder.open(image), probe = try other.open(image)
        #expect(try holder.request("lock \(held) exclusive") == "ok")
        #expect(try other.request("trylock \(probe) exclusive") == "wouldblock")
        #expect(try other.request("trylock \(probe) shared") == "wouldblock")
        #expect(try holder.request("unlock \(held) exclusive") == "ok")
        #expect(try other.request("trylock \(probe) exclusive") == "ok")
    }

    @Test("shared holders coexist and keep out an exclusive one")
    func sharedCoexist() throws {
        let first = try LineProcess.fixture(), second = try LineProcess.fixture(), writer = try LineProcess.fixture()
        let a = try first.open(image, "ro"), b = try second.open(image, "ro"), w = try writer.open(image)
        #expect(try first.request("lock \(a) shared") == "ok")
        #expect(try second.request("trylock \(b) shared") == "ok")
        #expect(try writer.request("trylock \(w) exclusive") == "wouldblock")
    }

    @Test("an exclusive waiter blocks in the kernel until the last shared holder releases")
    func exclusiveWaitsForSharedHolders() throws {
        let first = try LineProcess.fixture(), second = try LineProcess.fixture(), writer = try LineProcess.fixture()
        let a = try first.open(image, "ro"), b = try second.open(image, "ro"), w = try writer.open(image)
        #expect(try first.request("lock \(a) shared") == "ok")
        #expect(try second.request("lock \(b) shared") == "ok")
        writer.send("lock \(w) exclusive 60")
        // Blocked in F_OFD_SETLKW: the kernel lists the request as a waiter; a poller would not be.
        #expect(try eventually { try hasKernelWaiter(on: image) })
        #expect(try first.request("unlock \(a) shared") == "ok")
        // Woken by that release, the writer finds the second reader and blocks again.
        #expect(try eventually { try hasKernelWaiter(on: image) }, "still waiting for the second reader")
        #expect(try second.request("unlock \(b) shared") == "ok")
        #expect(try writer.nextLine() == "ok")
        #expect(try !hasKernelWaiter(on: image))
    }

    @Test("a wait that passes its deadline fails naming the holder's pid and program")
    func timeoutNamesHolder() throws {
        let holder = try LineProcess.fixture(), waiter = try LineProcess.fixture()
        let held = try holder.open(image), wait = try waiter.open(image)
        #expect(try holder.request("lock \(held) exclusive") == "ok")
        let answer = try waiter.request("lock \(wait) exclusive 0.3")
        #expect(answer.hasPrefix("err timeout timed out waiting for the exclusive transaction lock on \(image)"))
        #expect(answer.contains("held by pid \(holder.pid) (blk-lock-fixtur): transaction lock exclusive"))
    }

    @Test("cancelling an async wait ends it at once and takes nothing")
    func cancellationEndsWait() throws {
        let holder = try LineProcess.fixture(), waiter = try LineProcess.fixture(), later = try LineProcess.fixture()
        let held = try holder.open(image), wait = try waiter.open(image), probe = try later.open(image)
        #expect(try holder.request("lock \(held) exclusive") == "ok")
        #expect(try waiter.request("asynclock \(wait) exclusive") == "started")
        #expect(try eventually { try hasKernelWaiter(on: image) })
        // The cancelled task may answer before the command does: the two lines come in either order.
        let answers = [try waiter.request("cancel"), try waiter.nextLine()].sorted()
        #expect(answers.first?.hasPrefix("async err cancelled cancelled while waiting for the exclusive transaction lock") == true, "\(answers)")
        #expect(answers.last == "ok")
        #expect(try !hasKernelWaiter(on: image))
        #expect(try holder.request("unlock \(held) exclusive") == "ok")
        #expect(try later.request("trylock \(probe) exclusive") == "ok", "the cancelled waiter must not hold the lock")
    }

    @Test("an async wait is woken by the release")
    func asyncWaitWakes() throws {
        let holder = try LineProcess.fixture(), waiter = try LineProcess.fixture()
        let held = try holder.open(image), wait = try waiter.open(image)
        #expect(try holder.request("lock \(held) exclusive") == "ok")
        #expect(try waiter.request("asynclock \(wait) shared 60") == "started")
        #expect(try eventually { try hasKernelWaiter(on: image) })
        #expect(try holder.request("unlock \(held) exclusive") == "ok")
        #expect(try waiter.nextLine() == "async ok")
        #expect(try waiter.request("status \(wait)") == "ok shared 1")
    }

    @Test("kill -9 of a holder releases the lock")
    func killedHolderReleases() throws {
        let holder = try LineProcess.fixture(), waiter = try LineProcess.fixture()
        let held = try holder.open(image), wait = try waiter.open(image)
        #expect(try holder.request("lock \(held) exclusive") == "ok")
        waiter.send("lock \(wait) exclusive 60")
        #expect(try eventually { try hasKernelWaiter(on: image) })
        holder.kill9()
        #expect(try waiter.nextLine() == "ok")
    }

    @Test("nested acquisitions are counted: the last release unlocks")
    func nestedCounting() throws {
        let holder = try LineProcess.fixture(), other = try LineProcess.fixture()
        let held = try holder.open(image), probe = try other.open(image)
        #expect(try holder.request("lock \(held) exclusive") == "ok")
        #expect(try holder.request("lock \(held) exclusive") == "ok")
        #expect(try holder.request("lock \(held) shared") == "ok")
        #expect(try holder.request("status \(held)") == "ok exclusive 3")
        #expect(try kernelLocks(on: image).filter { !$0.isWaiting }.count == 1, "one kernel lock, however deep")
        #expect(try holder.request("unlock \(held) exclusive") == "ok")
        #expect(try holder.request("unlock \(held) shared") == "ok")
        #expect(try other.request("trylock \(probe) shared") == "wouldblock")
        #expect(try holder.request("unlock \(held) exclusive") == "ok")
        #expect(try holder.request("status \(held)") == "ok unlocked 0")
        #expect(try other.request("trylock \(probe) exclusive") == "ok")
        #expect(try holder.request("unlock \(held) exclusive").hasPrefix("err invalid-request"))
    }

    @Test("a failed upgrade keeps the shared lock")
    func failedUpgradeKeepsShared() throws {
        let first = try LineProcess.fixture(), upgrader = try LineProcess.fixture(), later = try LineProcess.fixture()
        let a = try first.open(image), u = try upgrader.open(image), probe = try later.open(image)
        #expect(try first.request("lock \(a) shared") == "ok")
        #expect(try upgrader.request("lock \(u) shared") == "ok")
        #expect(try upgrader.request("trylock \(u) exclusive") == "wouldblock")
        #expect(try upgrader.request("lock \(u) exclusive 0.3").hasPrefix("err timeout"))
        #expect(try upgrader.request("status \(u)") == "ok shared 1")
        #expect(try first.request("unlock \(a) shared") == "ok")
        #expect(try later.request("trylock \(probe) exclusive") == "wouldblock", "the upgrader still holds it shared")
        #expect(try later.request("trylock \(probe) shared") == "ok")
    }

    @Test("upgrade, then downgrade when the exclusive acquisition is released")
    func upgradeAndDowngrade() throws {
        let holder = try LineProcess.fixture(), other = try LineProcess.fixture()
        let held = try holder.open(image), probe = try other.open(image)
        #expect(try holder.request("lock \(held) shared") == "ok")
        #expect(try holder.request("lock \(held) exclusive 5") == "ok")
        #expect(try other.request("trylock \(probe) shared") == "wouldblock")
        #expect(try holder.request("unlock \(held) exclusive") == "ok")
        #expect(try holder.request("status \(held)") == "ok shared 1")
        #expect(try other.request("trylock \(probe) shared") == "ok")
        #expect(try other.request("trylock \(probe) exclusive") == "wouldblock")
    }

    @Test("while one thread of an open waits, its siblings nest and release without blocking")
    func siblingsDoNotQueueBehindAWait() throws {
        let process = try LineProcess.fixture(), other = try LineProcess.fixture()
        let handle = try process.open(image), probe = try other.open(image)
        #expect(try process.request("lock \(handle) shared") == "ok")
        #expect(try other.request("lock \(probe) shared") == "ok")
        #expect(try process.request("asynclock \(handle) exclusive") == "started")
        #expect(try eventually { try hasKernelWaiter(on: image) })
        #expect(try process.request("lock \(handle) shared", within: 5) == "ok", "a nested acquisition does not wait")
        #expect(try process.request("unlock \(handle) shared", within: 5) == "ok")
        #expect(try process.request("trylock \(handle) exclusive", within: 5) == "wouldblock")
        #expect(try process.request("lock \(handle) exclusive 1", within: 5).hasPrefix("err conflict another thread is already waiting"))
        #expect(try other.request("unlock \(probe) shared") == "ok")
        #expect(try process.nextLine() == "async ok")
        #expect(try process.request("status \(handle)") == "ok exclusive 2")
    }

    @Test("two opens in one process exclude each other")
    func inProcessExclusion() throws {
        let process = try LineProcess.fixture()
        let first = try process.open(image), second = try process.open(image)
        #expect(try process.request("lock \(first) exclusive") == "ok")
        #expect(try process.request("trylock \(second) shared") == "wouldblock")
        #expect(try process.request("lock \(second) shared 0.2").hasPrefix("err timeout"))
        #expect(try process.request("close \(first)") == "ok")
        #expect(try process.request("trylock \(second) shared") == "ok")
    }

    @Test("an exclusive lock through a read-only open is refused with the reason")
    func exclusiveNeedsWritableOpen() throws {
        let process = try LineProcess.fixture()
        let handle = try process.open(image, "ro")
        let answer = try process.request("lock \(handle) exclusive")
        #expect(answer.hasPrefix("err invalid-request the exclusive transaction lock on \(image) needs the image opened read-write"))
    }

    @Test("locking off takes no kernel lock")
    func lockingOff() throws {
        let process = try LineProcess.fixture(), other = try LineProcess.fixture()
        let handle = try process.open(image, "rw", mode: "off"), probe = try other.open(image)
        #expect(try process.request("lock \(handle) exclusive") == "ok")
        #expect(try process.request("perms \(handle) consistent-read,write write") == "ok")
        #expect(try kernelLocks(on: image).isEmpty)
        #expect(try other.request("trylock \(probe) exclusive") == "ok")
    }
}

@Suite("transaction lock costs")
struct TransactionLockCostTests {
    @Test("nested acquisitions and releases make no system call")
    func nestedMakesNoSyscall() throws {
        let scratch = try Scratch()
        let image = try scratch.rawImage()
        let trace = scratch.directory + "/fcntl.trace"
        let traced = try LineProcess("/usr/bin/strace", ["-f", "-qq", "-e", "trace=fcntl", "-o", trace, fixturePath])
        #expect(try traced.nextLine() == "ready")
        let handle = try traced.open(image)
        #expect(try traced.request("lock \(handle) exclusive") == "ok")
        for _ in 0..<50 { #expect(try traced.request("lock \(handle) shared") == "ok") }
        for _ in 0..<50 { #expect(try traced.request("unlock \(handle) shared") == "ok") }
        #expect(try traced.request("unlock \(handle) exclusive") == "ok")
        #expect(try traced.finish() == 0)
        let calls = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
            .filter { $0.contains("F_OFD_SETLK") && $0.contains("l_start=300") }
        #expect(calls.count == 2, "one lock and one unlock, however deep: \(calls)")
    }
}
