// Strings blk does not control — another process's name, an image's feature names, a blob name
// from a state directory — reach the terminal with their control characters escaped, and JSON
// keeps them exact. Also what blk says about a key file others may read.
import DeviceState
import Foundation
import Glibc
import Testing

@Suite("untrusted text in output, and key file permissions")
struct UntrustedTextTests {
    let scratch: Scratch
    /// Clears the screen, rings the bell: what a hostile name would do to a terminal printed raw.
    static let hostile = "\u{1b}[2Jevil\u{7}"
    static let escaped = "\\x1b[2Jevil\\x07"

    init() throws { scratch = try Scratch() }

    func expectNoControlCharacters(_ text: String, _ what: String) {
        let controls = text.unicodeScalars.filter { $0.value < 0x20 && $0 != "\n" || (0x7f...0x9f).contains($0.value) }
        #expect(controls.isEmpty, "\(what) printed control characters: \(text.debugDescription)")
    }

    @Test("a lock holder whose program name holds an escape sequence: escaped in blk locks, info and a conflict's error; exact in JSON")
    func hostileProgramName() throws {
        let image = try scratch.qcow2Image(size: "4M")
        // The kernel names a process after the file it ran: a link named so makes comm hostile.
        let program = scratch.directory + "/" + Self.hostile
        guard symlink(fixturePath, program) == 0 else { throw TestFailure("symlink") }
        let holder = try LineProcess(program, [])
        #expect(try holder.nextLine() == "ready")
        let handle = try holder.open(image)
        #expect(try holder.request("lock \(handle) exclusive") == "ok")
        #expect(try String(contentsOfFile: "/proc/\(holder.pid)/comm", encoding: .utf8) == Self.hostile + "\n")

        let locks = try blk("locks", image)
        #expect(locks.stdout.contains("pid \(holder.pid) (\(Self.escaped)): transaction lock exclusive"), "\(locks)")
        expectNoControlCharacters(locks.stdout, "blk locks")
        let info = try blk("info", image)
        #expect(info.stdout.contains("(\(Self.escaped))"), "\(info)")
        expectNoControlCharacters(info.stdout, "blk info")
        let blob = scratch.directory + "/blob"
        try scratch.write(blob, Data("x".utf8))
        let conflict = try blk("state", "put", "--timeout", "0", image, "name", blob)
        #expect(conflict.status == 75 && conflict.stderr.contains("(\(Self.escaped))"), "\(conflict)")
        expectNoControlCharacters(conflict.stderr, "a lock conflict's error")

        let json = try blk("locks", "--json", image)
        let decoded = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        let programs = (decoded?["holders"] as? [[String: Any]])?.compactMap { $0["program"] as? String }
        #expect(programs == [Self.hostile], "JSON keeps the name exact: \(json.stdout)")
        try holder.finish()
    }

    @Test("a qcow2 feature name table naming a feature with an escape sequence and a line feed: escaped in the error")
    func hostileFeatureName() throws {
        let image = try scratch.qcow2Image(size: "4M")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        // qemu-img writes a feature name table (extension 0x6803f857); its first entry becomes
        // incompatible bit 10, which the header then sets, named by a hostile string.
        guard let table = bytes.range(of: Data([0x68, 0x03, 0xf8, 0x57])) else { throw TestFailure("no feature name table") }
        let entry = table.upperBound + 4
        let name = Array((Self.hostile + "\nblk: forged line").utf8)
        bytes.replaceSubrange(entry..<entry + 48, with: [0, 10] + name + [UInt8](repeating: 0, count: 46 - name.count))
        bytes[72 + 6] |= 0x04 // incompatible features, big-endian: bit 10
        try bytes.write(to: URL(fileURLWithPath: image))

        let info = try blk("info", image)
        #expect(info.status == 69 && info.stderr.contains("Unsupported qcow2 feature(s): \(Self.escaped)\\x0ablk: forged line"), "\(info)")
        expectNoControlCharacters(info.stderr, "blk info's error")
        #expect(info.stderr.split(separator: "\n").count == 1, "one line, none forged: \(info.stderr)")
    }

    /// Reading a directory refuses such a name (its slot counts as damaged), as it did before
    /// control characters were escaped: this keeps it so.
    @Test("a blob name with control characters in a state directory: its slot is damage, the name never printed")
    func hostileBlobName() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let blob = scratch.directory + "/blob"
        try scratch.write(blob, Data("x".utf8))
        let placeholder = "AAAAAAAAAAAAAA"
        #expect(try blk("state", "put", image, placeholder, blob).status == 0)
        // Rename the blob in every slot that names it, and seal each slot with its checksum again.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        let hostileName = Data((Self.hostile + "\nxxxx").utf8)
        #expect(hostileName.count == placeholder.utf8.count)
        for slotStart in [4096, 4096 + 65536] {
            let slot = slotStart..<slotStart + 65536
            guard let found = bytes.range(of: Data(placeholder.utf8), in: slot) else { continue }
            bytes.replaceSubrange(found, with: hostileName)
            let used = Int(bytes[slotStart + 16]) << 24 | Int(bytes[slotStart + 17]) << 16 | Int(bytes[slotStart + 18]) << 8 | Int(bytes[slotStart + 19])
            let checksum = CRC32C.checksum(Array(bytes[slotStart..<slotStart + used - 4]))
            bytes.replaceSubrange(slotStart + used - 4..<slotStart + used, with: withUnsafeBytes(of: checksum.bigEndian) { Data($0) })
        }
        try bytes.write(to: URL(fileURLWithPath: image))
        let listed = try blk("state", "list", image)
        #expect([0, 65].contains(listed.status) && listed.stderr.contains("invalid blob name"), "\(listed)")
        #expect(!(listed.stdout + listed.stderr).contains("evil"), "\(listed)")
        expectNoControlCharacters(listed.stdout + listed.stderr, "blk state list")
    }

    @Test("a key or passphrase file others may read is named with its mode on stderr; a 0600 one is not")
    func exposedKeyFile() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let key = scratch.directory + "/key"
        try scratch.write(key, Data((0..<32).map { _ in UInt8.random(in: 0...255) }))
        let blob = scratch.directory + "/blob"
        try scratch.write(blob, Data("x".utf8))
        chmod(key, 0o644)
        let exposed = try blk("state", "put", "--key-file", key, image, "name", blob)
        #expect(exposed.status == 0)
        #expect(exposed.stderr.contains("blk: warning: the key file '\(key)' has mode 0644"), "\(exposed)")
        chmod(key, 0o640)
        let groupReadable = try blk("state", "get", "--key-file", key, image, "name", scratch.directory + "/out")
        #expect(groupReadable.stderr.contains("has mode 0640"), "\(groupReadable)")
        chmod(key, 0o600)
        let owned = try blk("state", "get", "--key-file", key, image, "name", scratch.directory + "/out")
        #expect(owned.status == 0 && owned.stderr.isEmpty, "\(owned)")
    }
}
