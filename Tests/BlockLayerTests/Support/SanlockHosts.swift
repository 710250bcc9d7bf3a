// SanlockHosts: simulated hosts sharing storage on one machine — one real sanlock daemon per
// host, each with its own run directory and host name, and a folder (or one plain file, standing
// for a lease device) as the lease storage on shared storage. Every process a test runs "on" a host gets that host's environment;
// an inherited SANLOCK_RUN_DIR would silently point it at another host's daemon.
import Foundation
import Glibc

final class SanlockHosts {
    static let daemonPath = "/usr/sbin/sanlock"
    static var available: Bool { access(daemonPath, X_OK) == 0 }

    let scratch: Scratch
    let lockspace = "blktest"
    let leases: String
    let layout: Layout

    enum Layout: String, CustomStringConvertible {
        /// A lease folder: the lockspace file, a lease file per image, the hosts' recorded names.
        case folder
        /// One file standing for a lease device: lockspace, sanlock's resource index, leases.
        case device
        var description: String { rawValue }
    }

    /// The name a host's messages give: recorded by `blk lease join` in a folder, the daemon's
    /// own (-e) on a device.
    func name(_ host: Int) -> String { layout == .folder ? "node-\(host)" : "host\(host)" }
    private var daemons: [Int: Spawned] = [:]
    let count: Int
    let ioTimeout: Int

    /// Starts `count` daemons, lays out the lease area and joins every host (in parallel: a join
    /// takes about 2 × ioTimeout + 1 s).
    /// ioTimeout 2: a loaded 2-core machine can delay one renewal I/O past 1 s, and a host whose
    /// renewals fail is fenced.
    init(count: Int = 2, ioTimeout: Int = 2, layout: Layout = .folder) throws {
        scratch = try Scratch()
        self.count = count
        self.ioTimeout = ioTimeout
        self.layout = layout
        leases = scratch.directory + "/leases"
        switch layout {
        case .folder: mkdir(leases, 0o755)
        case .device: _ = try scratch.rawImage("leases", bytes: 16 << 20)
        }
        for host in 1...count { try startDaemon(host) }
        let initialized = try run(blkPath, ["lease", "init", "--io-timeout", "\(ioTimeout)"], environment: environment(host: 1))
        guard initialized.status == 0 else { throw TestFailure("blk lease init: \(initialized)") }
        let joins = try (1...count).map { host in
            try Spawned(blkPath, ["lease", "join", "--io-timeout", "\(ioTimeout)"], stdinPipe: false, environment: environment(host: host))
        }
        for (index, join) in joins.enumerated() {
            guard join.wait(within: 60) == 0 else { throw TestFailure("host \(index + 1) could not join: \(readAll(join.errors))") }
        }
    }

    deinit {
        for host in Array(daemons.keys) { stopDaemon(host) }
    }

    func runDirectory(_ host: Int) -> String { scratch.directory + "/host\(host)" }

    /// What a process on `host` runs with: its daemon, the lease storage, its host id and name;
    /// no config file.
    func environment(host: Int) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["SANLOCK_RUN_DIR"] = runDirectory(host)
        environment["BLK_LEASE_DIR"] = leases
        environment["BLK_LOCKSPACE"] = lockspace
        environment["BLK_HOST_ID"] = "\(host)"
        environment["BLK_HOST_NAME"] = "node-\(host)"
        environment["BLK_LEASE_CONFIG"] = "/dev/null"
        environment["BLK_LEASE_FENCE_HELPER"] = blkPath
        return environment
    }

    /// Runs blk on `host`.
    func blk(_ host: Int, _ arguments: String..., within seconds: Double = 60) throws -> Finished {
        try run(blkPath, arguments, within: seconds, environment: environment(host: host))
    }

    /// A lock fixture running on `host`.
    func fixture(_ host: Int) throws -> LineProcess {
        let fixture = try LineProcess(fixturePath, [], environment: environment(host: host))
        guard try fixture.nextLine() == "ready" else { throw TestFailure("fixture did not start") }
        return fixture
    }

    /// A state fixture running on `host`.
    func stateFixture(_ host: Int) throws -> LineProcess {
        let fixture = try LineProcess(stateFixturePath, [], environment: environment(host: host))
        guard try fixture.nextLine() == "ready" else { throw TestFailure("state fixture did not start") }
        return fixture
    }

    /// `sanlock daemon` in the foreground (-D) without a watchdog (-w 0), memory locking (-l 0)
    /// or real-time priority (-h 0), which a container does not allow; its log goes to a file.
    private func startDaemon(_ host: Int) throws {
        let directory = runDirectory(host)
        mkdir(directory, 0o755)
        var environment = ProcessInfo.processInfo.environment
        environment["SANLOCK_RUN_DIR"] = directory
        environment["SANLOCK_PRIVILEGED"] = "0"
        let command = "exec \(Self.daemonPath) daemon -D -w 0 -l 0 -h 0 -e host\(host) >\(directory)/log 2>&1"
        daemons[host] = try Spawned("/bin/sh", ["-c", command], stdinPipe: false, environment: environment)
        guard eventually(within: 20, { access(directory + "/sanlock.sock", F_OK) == 0 }) else {
            throw TestFailure("sanlock daemon for host \(host) did not start: \(daemonLog(host))")
        }
    }

    func daemonLog(_ host: Int) -> String {
        (try? String(contentsOfFile: runDirectory(host) + "/log", encoding: .utf8)) ?? ""
    }

    /// Kills `host`'s daemon at once, as a crash would (its lockspace stops being renewed), and
    /// the helper process it forked.
    func killDaemon(_ host: Int) {
        guard let daemon = daemons.removeValue(forKey: host) else { return }
        let helpers = (try? String(contentsOfFile: "/proc/\(daemon.pid)/task/\(daemon.pid)/children", encoding: .utf8))?
            .split(separator: " ").compactMap { pid_t($0) } ?? []
        kill(daemon.pid, SIGKILL)
        _ = daemon.wait(within: 20)
        for helper in helpers { kill(helper, SIGKILL) }
    }

    /// Stops `host`'s daemon: killed, since a daemon with lockspaces joined refuses SIGTERM and
    /// the lease area is thrown away with the test.
    private func stopDaemon(_ host: Int) { killDaemon(host) }
}
