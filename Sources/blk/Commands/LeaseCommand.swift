// `blk lease init|join|leave|status|revoke|fence`: the sanlock lockspace image leases live in. The
// settings come from the options, else BLK_LEASE_* in the environment, else the config file.
import ArgumentParser
import BlockCLI
import BlockLocking
import Glibc

struct LeaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease",
        abstract: "Manage the sanlock lockspace that image leases on shared storage live in.",
        discussion: """
            With a lease folder configured (--lease-dir, BLK_LEASE_DIR, or 'lease-dir =' in \
            /etc/blocklayer/leases.conf), every read-write open of an image also takes an exclusive \
            sanlock lease, and every read-only open a shared one. Each host runs the sanlock daemon \
            and joins the lockspace once with its own host id (1–2000).
            """,
        subcommands: [LeaseInitCommand.self, LeaseJoinCommand.self, LeaseLeaveCommand.self, LeaseStatusCommand.self,
                      LeaseRevokeCommand.self, LeaseFenceCommand.self]
    )
}

struct LeaseOptions: ParsableArguments {
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions
    @Flag(help: "Print JSON on stdout.") var json = false

    /// The options over the environment over the config file; exits 64 when no lease folder is known.
    func settings() throws -> LeaseSettings {
        let settings: LeaseSettings?
        do throws(LockingError) {
            settings = try leases.settings()
        } catch {
            throw report(error, json: json)
        }
        guard let settings else {
            throw report(LockingError(.invalidRequest, "no lease folder configured: give --lease-dir, set BLK_LEASE_DIR, or write 'lease-dir =' in \(LeaseSettings.defaultConfigFile)"), json: json)
        }
        return settings
    }

    func hostID(of settings: LeaseSettings) throws -> UInt64 {
        guard let id = settings.hostID else {
            throw report(LockingError(.invalidRequest, "this host's id is not configured: give --host-id, set BLK_HOST_ID, or write 'host-id =' in the config file"), json: json)
        }
        return id
    }

    func run(_ body: () throws(LockingError) -> Void) throws {
        do throws(LockingError) { try body() } catch { throw report(error, json: json) }
    }
}

struct LeaseInitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the lockspace in the lease folder (once, from any host; no host may be using it).")
    @OptionGroup var options: LeaseOptions
    @Option(help: ArgumentHelp("Lease renewal I/O timeout in seconds (sanlock's default 10).", valueName: "sec")) var ioTimeout: UInt32?
    @Flag(help: "Rewrite a lockspace that exists: every host in it fails, every lease holder is fenced.") var force = false

    func run() throws {
        let settings = try options.settings()
        try options.run { () throws(LockingError) in
            try SanlockLockspace(settings: settings).initialize(ioTimeout: ioTimeout ?? settings.ioTimeout, force: force)
        }
        if options.json { printJSON(["lease-dir": settings.location, "lockspace": settings.lockspace]) }
        else { print("lockspace \(settings.lockspace) written to \(settings.lockspacePath)") }
    }
}

struct LeaseJoinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join",
        abstract: "Join the lockspace on this host (through its sanlock daemon); returns once joined, about 2 × io-timeout + 1 s.")
    @OptionGroup var options: LeaseOptions
    @Option(help: ArgumentHelp("Lease renewal I/O timeout in seconds (sanlock's default 10: joining takes 21 s; 1: 3 s).", valueName: "sec")) var ioTimeout: UInt32?

    func run() throws {
        let settings = try options.settings()
        let id = try options.hostID(of: settings)
        try options.run { () throws(LockingError) in
            try SanlockLockspace(settings: settings).join(hostID: id, ioTimeout: ioTimeout ?? settings.ioTimeout)
        }
        if options.json { printJSON(LeaseMembershipJSON(lockspace: settings.lockspace, hostId: id, joined: true)) }
        else { print("joined lockspace \(settings.lockspace) as host \(id)") }
    }
}

struct LeaseLeaveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leave",
        abstract: "Leave the lockspace on this host; refused while a process here holds a lease in it.")
    @OptionGroup var options: LeaseOptions
    @Flag(help: "Leave even so: sanlock kills the processes holding leases in the lockspace.") var force = false

    func run() throws {
        let settings = try options.settings()
        let id = try options.hostID(of: settings)
        try options.run { () throws(LockingError) in try SanlockLockspace(settings: settings).leave(hostID: id, force: force) }
        if options.json { printJSON(LeaseMembershipJSON(lockspace: settings.lockspace, hostId: id, joined: false)) }
        else { print("left lockspace \(settings.lockspace)") }
    }
}

struct LeaseStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Whether this host has joined the lockspace, the hosts in it, and an image's lease owners.")
    @OptionGroup var options: LeaseOptions
    @Argument(help: "An image whose lease owners to show.") var image: String?

    func run() throws {
        let settings = try options.settings()
        let lockspace = SanlockLockspace(settings: settings)
        var joined = false
        var hosts: [SanlockLockspace.Host] = []
        var owners: [LeaseOwner]?
        try options.run { () throws(LockingError) in
            joined = try lockspace.isJoined(hostID: settings.hostID ?? 0)
            if joined { hosts = try lockspace.hosts() }
            if let image {
                owners = try SanlockEngine(settings: settings).owners(of: try SanlockEngine.leasedImage(path: image))
            }
        }
        if options.json {
            printJSON(LeaseStatusJSON(leaseDir: settings.location, lockspace: settings.lockspace, joined: joined, hostId: settings.hostID,
                                      hosts: hosts.map(LeaseStatusJSON.Host.init), image: image, owners: owners?.map(LeaseOwnerJSON.init)))
            return
        }
        print("lockspace: \(settings.lockspace) in \(settings.location)")
        print("this host: \(joined ? "joined" : "not joined")\(settings.hostID.map { " (host id \($0))" } ?? "")")
        if joined && hosts.isEmpty {
            print("hosts: not read yet (the daemon reads the lockspace at its next renewal)")
        } else if !hosts.isEmpty {
            print("hosts:")
            for host in hosts {
                print("  host \(host.id)\(host.name.map { " (\(escapingControlCharacters($0)))" } ?? ""): \(host.state), generation \(host.generation), io timeout \(host.ioTimeout) s")
            }
        }
        if let image, let owners {
            print("\(image): " + (owners.isEmpty ? "lease free" : "lease held by " + owners.map(\.description).joined(separator: " and ")))
        }
    }
}

struct LeaseMembershipJSON: Encodable {
    var lockspace: String
    var hostId: UInt64
    var joined: Bool
}

struct LeaseStatusJSON: Encodable {
    struct Host: Encodable {
        var id: UInt64
        var name: String?
        var state: String
        var generation: UInt64
        var ioTimeout: UInt32
        init(_ host: SanlockLockspace.Host) {
            id = host.id
            name = host.name
            state = host.state
            generation = host.generation
            ioTimeout = host.ioTimeout
        }
    }
    var leaseDir: String
    var lockspace: String
    var joined: Bool
    var hostId: UInt64?
    var hosts: [Host]
    var image: String?
    var owners: [LeaseOwnerJSON]?
}

struct LeaseRevokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Ask the host holding an image's lease to give it up (it stops writing and releases); --force kills the holder.",
        discussion: "The owner's sanlock daemon acts on its next lease renewal, within about 2 × io_timeout.")
    @OptionGroup var options: LeaseOptions
    @Flag(help: "Have sanlock SIGKILL the holding process instead of asking it.") var force = false
    @Argument(help: "The image file.") var image: String

    func run() throws {
        let settings = try options.settings()
        try options.run { () throws(LockingError) in
            try SanlockEngine(settings: settings).revoke(try SanlockEngine.leasedImage(path: image), force: force)
        }
        if options.json { printJSON(["image": image, "revoked": force ? "force" : "graceful"]) }
        else { print("asked the holders of \(image)'s lease to \(force ? "be killed" : "give it up")") }
    }
}

/// sanlock's kill path: the daemon runs `blk lease fence PID` to revoke a process's leases.
struct LeaseFenceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fence",
        abstract: "Tell a process to stop writing to every image it holds a lease on (sanlock's kill path runs this).",
        shouldDisplay: false)
    @Argument(help: "The process to fence.") var pid: Int32

    func run() throws {
        do throws(LockingError) {
            try SanlockEngine.fence(pid: pid, reason: "sanlock revoked the leases of pid \(pid)")
        } catch {
            throw report(error, json: false)
        }
    }
}
