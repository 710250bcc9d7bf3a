// LeaseConfigOptions: where image leases live (interface.md §5), on every command that opens an
// image. Each option overrides its environment variable, which overrides the config file.
import ArgumentParser
import BlockLocking

package struct LeaseConfigOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The lease folder on the shared storage (or a lease device); $BLK_LEASE_DIR. Unset: no leases.", valueName: "dir"))
    package var leaseDir: String?
    @Option(name: .customLong("host-id"), help: ArgumentHelp("This host's id in the lockspace, 1–2000; $BLK_HOST_ID.", valueName: "n"))
    package var hostID: UInt64?
    @Option(help: ArgumentHelp("This host's name in messages (default the host name); $BLK_HOST_NAME.", valueName: "name"))
    package var hostName: String?
    @Option(help: ArgumentHelp("The lockspace (default blk); $BLK_LOCKSPACE.", valueName: "name"))
    package var lockspace: String?

    package init() {}

    /// None of the options given: the environment and the config file decide (blk's short verbs
    /// parsed without ArgumentParser, Support/ShortVerbs.swift).
    package static var unset: LeaseConfigOptions {
        var options = LeaseConfigOptions()
        options.leaseDir = nil
        options.hostID = nil
        options.hostName = nil
        options.lockspace = nil
        return options
    }

    /// The process's environment with these options laid over it.
    package var environment: [String: String] {
        var environment = LeaseSettings.currentEnvironment()
        for (variable, value) in [("BLK_LEASE_DIR", leaseDir), ("BLK_HOST_ID", hostID.map { "\($0)" }),
                                  ("BLK_HOST_NAME", hostName), ("BLK_LOCKSPACE", lockspace)] {
            if let value { environment[variable] = value }
        }
        return environment
    }

    /// What an open takes leases with.
    package var policy: LeasePolicy {
        leaseDir == nil && hostID == nil && hostName == nil && lockspace == nil ? .configured : .environment(environment)
    }

    /// The settings, or nil when no lease folder is configured.
    package func settings() throws(LockingError) -> LeaseSettings? {
        try policy.resolved()
    }
}
