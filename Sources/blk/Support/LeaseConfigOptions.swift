// LeaseConfigOptions: where image leases live (interface.md §5), on every command that opens an
// image. Each option overrides its environment variable, which overrides the config file.
import ArgumentParser
import BlockLocking

struct LeaseConfigOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The lease folder on the shared storage (or a lease device); $BLK_LEASE_DIR. Unset: no leases.", valueName: "dir"))
    var leaseDir: String?
    @Option(name: .customLong("host-id"), help: ArgumentHelp("This host's id in the lockspace, 1–2000; $BLK_HOST_ID.", valueName: "n"))
    var hostID: UInt64?
    @Option(help: ArgumentHelp("This host's name in messages (default the host name); $BLK_HOST_NAME.", valueName: "name"))
    var hostName: String?
    @Option(help: ArgumentHelp("The lockspace (default blk); $BLK_LOCKSPACE.", valueName: "name"))
    var lockspace: String?

    /// The process's environment with these options laid over it.
    var environment: [String: String] {
        var environment = LeaseSettings.currentEnvironment()
        for (variable, value) in [("BLK_LEASE_DIR", leaseDir), ("BLK_HOST_ID", hostID.map { "\($0)" }),
                                  ("BLK_HOST_NAME", hostName), ("BLK_LOCKSPACE", lockspace)] {
            if let value { environment[variable] = value }
        }
        return environment
    }

    /// What an open takes leases with.
    var policy: LeasePolicy {
        leaseDir == nil && hostID == nil && hostName == nil && lockspace == nil ? .configured : .environment(environment)
    }

    /// The settings, or nil when no lease folder is configured.
    func settings() throws(LockingError) -> LeaseSettings? {
        try policy.resolved()
    }
}
