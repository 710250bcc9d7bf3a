// LeaseSettings: where this host's image leases live and under which lockspace — from the open's
// options (blk's --lease-dir, --lockspace, --host-id, --host-name), else the environment
// (BLK_LEASE_DIR, BLK_LOCKSPACE, BLK_HOST_ID, BLK_HOST_NAME), else a config file (BLK_LEASE_CONFIG,
// default /etc/blocklayer/leases.conf), as libvirt reads its sanlock settings from qemu-sanlock.conf.
import Glibc
import Posix
import SystemPackage

/// Where one host's image leases live, gathered in one value because every host sharing the
/// storage must agree on the location and the lockspace, while the host id is this host's own.
public struct LeaseSettings: Sendable, Hashable {
    /// Where the leases live on the shared storage: a folder holding the lockspace file and one
    /// lease file per image (as libvirt's auto disk leases), or a block device or file holding the
    /// lockspace at offset 0 and sanlock's resource index after it (for a SAN LUN).
    public var location: String
    /// The lockspace every host sharing the storage joins.
    public var lockspace: String
    /// This host's id in the lockspace (1–2000); joining needs it.
    public var hostID: UInt64?
    /// The name this host goes by in messages; default the host name.
    public var hostName: String?
    /// The lease renewal I/O timeout in seconds for init and join; sanlock's default is 10.
    public var ioTimeout: UInt32?

    /// The lockspace used when none is named, so hosts configured only with a location still meet.
    public static let defaultLockspace = "blk"
    /// Read when BLK_LEASE_CONFIG names no other file: a host's settings outlive any one shell.
    public static let defaultConfigFile = "/etc/blocklayer/leases.conf"

    /// Settings given by the program itself, bypassing the environment and the config file.
    public init(location: String, lockspace: String = LeaseSettings.defaultLockspace, hostID: UInt64? = nil,
                hostName: String? = nil, ioTimeout: UInt32? = nil) {
        self.location = location
        self.lockspace = lockspace
        self.hostID = hostID
        self.hostName = hostName
        self.ioTimeout = ioTimeout
    }

    /// The layout `location` has: a folder, or one lease area (device or file).
    public enum Layout: Sendable, Hashable {
        case directory
        case area
    }

    /// nil when `location` cannot be reached (errno says why).
    public var layout: Layout? {
        var status = stat()
        guard stat(location, &status) == 0 else { return nil }
        return (status.st_mode & S_IFMT) == S_IFDIR ? .directory : .area
    }

    /// The lockspace's own storage: a file in the folder, or the area itself (at offset 0).
    public var lockspacePath: String {
        layout == .directory ? location + "/" + lockspace + ".lockspace" : location
    }

    /// The settings this process is configured with, read once: nil when neither the
    /// environment nor the config file names a lease location.
    public static var configured: Result<LeaseSettings?, LockingError> { configuredOnce }

    private static let configuredOnce: Result<LeaseSettings?, LockingError> = Result { () throws(LockingError) in
        try resolve(environment: currentEnvironment())
    }

    /// The environment variable for each config-file key.
    public static let variables = ["lease-dir": "BLK_LEASE_DIR", "lockspace": "BLK_LOCKSPACE", "host-id": "BLK_HOST_ID",
                                   "host-name": "BLK_HOST_NAME", "io-timeout": "BLK_LEASE_IO_TIMEOUT"]

    /// Resolves settings from `environment`, falling back to the config file it names (or the
    /// default one) for anything it leaves out.
    public static func resolve(environment: [String: String]) throws(LockingError) -> LeaseSettings? {
        let configPath = environment["BLK_LEASE_CONFIG"] ?? defaultConfigFile
        var values = try readConfig(configPath, required: environment["BLK_LEASE_CONFIG"] != nil)
        for (key, variable) in variables {
            if let value = environment[variable], !value.isEmpty { values[key] = value }
        }
        guard let location = values["lease-dir"] else { return nil }
        let lockspace = values["lockspace"] ?? defaultLockspace
        guard !lockspace.isEmpty, lockspace.utf8.count < 48, !lockspace.contains("/") else {
            throw LockingError(.invalidRequest, "lockspace name '\(lockspace)' must be 1–47 bytes without '/'")
        }
        var settings = LeaseSettings(location: location, lockspace: lockspace, hostName: values["host-name"])
        if let text = values["host-id"] {
            guard let id = UInt64(text), (1...2000).contains(id) else {
                throw LockingError(.invalidRequest, "host id '\(text)' is not a number from 1 to 2000")
            }
            settings.hostID = id
        }
        if let text = values["io-timeout"] {
            guard let seconds = UInt32(text), seconds > 0 else {
                throw LockingError(.invalidRequest, "lease io timeout '\(text)' is not a whole number of seconds above 0")
            }
            settings.ioTimeout = seconds
        }
        return settings
    }

    /// `key = value` lines; `#` starts a comment. A missing default file is no error.
    static func readConfig(_ path: String, required: Bool) throws(LockingError) -> [String: String] {
        guard let file = fopen(path, "r") else {
            if !required && Errno.current == .noSuchFileOrDirectory { return [:] }
            throw LockingError(.notFound, "Could not read the lease config '\(path)': \(Errno.current)", path: path)
        }
        defer { fclose(file) }
        var values: [String: String] = [:]
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        var number = 0
        while getline(&line, &capacity, file) >= 0, let line {
            number += 1
            let text = String(cString: line).split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            let trimmed = text.trimmingSpaces
            if trimmed.isEmpty { continue }
            let parts = trimmed.split(separator: "=", maxSplits: 1)
            let keys = variables.keys.sorted()
            guard parts.count == 2, keys.contains(String(parts[0]).trimmingSpaces) else {
                throw LockingError(.invalidRequest, "\(path):\(number): expected one of \(keys.joined(separator: ", ")) = value")
            }
            values[String(parts[0]).trimmingSpaces] = String(parts[1]).trimmingSpaces
        }
        return values
    }

    /// The BLK_ variables of this process's environment, all that `resolve(environment:)` reads,
    /// as a dictionary, from `environ` without Foundation. Every command that opens an image
    /// asks, and decoding and hashing the whole environment was 3 % of a `blk info`.
    public static func currentEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            defer { entry += 1 }
            guard strncmp(pointer, "BLK_", 4) == 0 else { continue }
            let pair = String(cString: pointer)
            if let equals = pair.firstIndex(of: "=") {
                result[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            }
        }
        return result
    }
}

/// Whether an open takes image leases, and with which settings.
public enum LeasePolicy: Sendable, Hashable {
    /// No lease, whatever this host is configured with.
    case none
    /// These settings.
    case settings(LeaseSettings)
    /// `LeaseSettings.configured`: the environment, else the config file; none when neither says.
    case configured
    /// Resolved from these variables (and the config file they name) as from the environment —
    /// a command line's options laid over the process's environment.
    case environment([String: String])

    /// The settings to use, or nil for none; a broken configuration is an error, not "no lease".
    public func resolved() throws(LockingError) -> LeaseSettings? {
        switch self {
        case .none: return nil
        case .settings(let settings): return settings
        case .configured: return try LeaseSettings.configured.get()
        case .environment(let environment): return try LeaseSettings.resolve(environment: environment)
        }
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }.reversed())
    }
}
