// Lease configuration and the pure parts of the sanlock engine: where settings come from, the
// mode a set of permissions needs, host names read from a delta lease, the image's lease name.
import Foundation
import Testing
@testable import BlockLocking

@Suite("lease settings and names")
struct LeaseSettingsTests {
    @Test("environment over config file; no area means no lease; bad values are refused")
    func resolve() throws {
        let scratch = try Scratch()
        let config = scratch.directory + "/leases.conf"
        try scratch.write(config, Data("""
            # shared storage for the vm hosts
            lease-dir = /srv/leases   # on the NFS export every host mounts
            lockspace = vms
            host-id = 7
            host-name = node-a
            io-timeout = 2

            """.utf8))
        let fromFile = try LeaseSettings.resolve(environment: ["BLK_LEASE_CONFIG": config])
        #expect(fromFile == LeaseSettings(location: "/srv/leases", lockspace: "vms", hostID: 7, hostName: "node-a", ioTimeout: 2))
        let overridden = try LeaseSettings.resolve(environment: ["BLK_LEASE_CONFIG": config, "BLK_HOST_ID": "8", "BLK_LEASE_DIR": "/dev/sdb1"])
        #expect(overridden == LeaseSettings(location: "/dev/sdb1", lockspace: "vms", hostID: 8, hostName: "node-a", ioTimeout: 2))
        #expect(try LeaseSettings.resolve(environment: ["BLK_LEASE_CONFIG": "/dev/null"]) == nil)
        #expect(try LeaseSettings.resolve(environment: ["BLK_LEASE_CONFIG": "/dev/null", "BLK_LEASE_DIR": "/a"])?.lockspace == "blk")
        #expect(throws: LockingError.self, "a config file named explicitly must exist") {
            try LeaseSettings.resolve(environment: ["BLK_LEASE_CONFIG": scratch.directory + "/absent", "BLK_LEASE_DIR": "/a", "BLK_LOCKSPACE": "x"])
        }
        #expect(throws: LockingError.self) { try LeaseSettings.resolve(environment: ["BLK_LEASE_CONFIG": "/dev/null", "BLK_LEASE_DIR": "/a", "BLK_LOCKSPACE": "a/b"]) }
        #expect(throws: LockingError.self) {
            try LeaseSettings.resolve(environment: ["BLK_LEASE_CONFIG": "/dev/null", "BLK_LEASE_DIR": "/a", "BLK_HOST_ID": "2001"])
        }
        try scratch.write(config, Data("lease-dir /srv/leases\n".utf8))
        #expect(throws: LockingError.self) { try LeaseSettings.resolve(environment: ["BLK_LEASE_CONFIG": config]) }
    }

    @Test("write or resize needs the image alone, reading keeps writers out, nothing needs nothing")
    func modes() {
        #expect(LeaseMode(for: [.consistentRead, .write]) == .exclusive)
        #expect(LeaseMode(for: [.resize]) == .exclusive)
        #expect(LeaseMode(for: [.consistentRead]) == .shared)
        #expect(LeaseMode(for: []) == nil)
    }

    @Test("the host name is read from a delta lease sector, and only from one")
    func hostName() {
        var sector = [UInt8](repeating: 0, count: 512)
        sector[0..<4] = [0x10, 0x20, 0x21, 0x12] // DELTA_DISK_MAGIC, little-endian
        sector[LeaseHostNames.resourceNameOffset..<LeaseHostNames.resourceNameOffset + 6] = ArraySlice("node-a".utf8)
        #expect(LeaseHostNames.hostName(inDeltaLease: sector) == "node-a")
        sector[0] = 0x11
        #expect(LeaseHostNames.hostName(inDeltaLease: sector) == nil, "not a delta lease")
        #expect(LeaseHostNames.hostName(inDeltaLease: Array(sector.prefix(100))) == nil)
    }

    @Test("an image's lease name is the same for every path to it, and fits sanlock's 48 bytes")
    func names() throws {
        let scratch = try Scratch()
        let image = try scratch.rawImage()
        let direct = try SanlockEngine.leasedImage(path: image)
        let roundabout = try SanlockEngine.leasedImage(path: scratch.directory + "/./../" + URL(fileURLWithPath: scratch.directory).lastPathComponent + "/disk.raw")
        #expect(direct == roundabout)
        #expect(direct.resourceName.hasPrefix("blk.") && direct.resourceName.utf8.count == 44)
        #expect(try SanlockEngine.leasedImage(path: try scratch.rawImage("other.raw")).resourceName != direct.resourceName)
        #expect(throws: LockingError.self) { try SanlockEngine.leasedImage(path: scratch.directory + "/missing") }
    }
}
