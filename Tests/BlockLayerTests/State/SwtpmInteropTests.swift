// Interop with swtpm, the TPM emulator: a state folder made by swtpm_setup and run by swtpm goes
// into a qcow2 image and back out, and a real swtpm starts from what comes out — plain, and with
// swtpm's own encryption (AES-CBC + HMAC-SHA256 under --key).
import Foundation
import Glibc
import Testing

@Suite("device-state store: swtpm state folders")
struct SwtpmInteropTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// A swtpm running on `folder` until `stop`.
    final class RunningTPM {
        let control: String
        let process: Spawned

        init(folder: String, control: String, extra: [String] = []) throws {
            self.control = control
            process = try Spawned("/usr/bin/swtpm", ["socket", "--tpm2", "--tpmstate", "dir=\(folder)",
                                                     "--ctrl", "type=unixio,path=\(control)",
                                                     "--server", "type=unixio,path=\(control).server",
                                                     "--flags", "startup-clear"] + extra, stdinPipe: false)
            // Listening, not only bound: between the two a connection is refused.
            guard eventually(within: 20, { Self.isListening(control) }) else {
                throw TestFailure("swtpm did not listen on its control socket")
            }
        }

        /// Whether a Unix socket listens at `path`, from /proc/net/unix (flag __SO_ACCEPTCON).
        static func isListening(_ path: String) -> Bool {
            guard let table = try? String(contentsOfFile: "/proc/net/unix", encoding: .utf8) else { return false }
            return table.split(separator: "\n").contains { line in
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                return fields.count >= 8 && fields[3] == "00010000" && fields[7] == path
            }
        }

        func ioctl(_ arguments: String...) throws -> Finished {
            try run("/usr/bin/swtpm_ioctl", ["--unix", control] + arguments)
        }

        func stop() throws {
            #expect(try ioctl("-s").status == 0)
            #expect(process.wait(within: 20) == 0)
        }
    }

    func printStates(_ folder: String, _ extra: [String] = []) throws -> String {
        let printed = try run("/usr/bin/swtpm", ["socket", "--tpm2", "--print-states", "--tpmstate", "dir=\(folder)"] + extra)
        #expect(printed.status == 0, "\(printed)")
        return printed.stdout
    }

    @Test("swtpm_setup → swtpm → blk state import → export → a swtpm that starts, the same states")
    func roundTrip() throws {
        let source = scratch.directory + "/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: false)
        let made = try run("/usr/bin/swtpm_setup", ["--tpm2", "--createek", "--tpmstate", source, "--overwrite"], within: 120)
        #expect(made.status == 0, "\(made)")
        // Run it once so it also has a volatile state, as a VM's TPM has.
        let first = try RunningTPM(folder: source, control: scratch.directory + "/ctrl1")
        #expect(try first.ioctl("-i").status == 0)
        #expect(try first.ioctl("-v").status == 0)
        // Importing beside a running swtpm is refused, naming it.
        let image = try scratch.qcow2Image(size: "4M")
        let busy = try blk("state", "import", "--swtpm", source, image)
        #expect(busy.status == 75 && busy.stderr.contains("pid \(first.process.pid) (swtpm)"), "\(busy)")
        try first.stop()
        let states = try printStates(source)
        #expect(states.contains("volatilestate"), "\(states)")

        let imported = try blk("state", "import", "--swtpm", source, image)
        #expect(imported.status == 0, "\(imported)")
        #expect(imported.stdout.contains("permall") && imported.stdout.contains("volatile"))
        let exported = scratch.directory + "/exported"
        #expect(try blk("state", "export", "--swtpm", exported, image).status == 0)
        #expect(try printStates(exported) == states)
        for file in ["tpm2-00.permall", "tpm2-00.volatilestate"] {
            #expect(FileManager.default.contents(atPath: exported + "/" + file) == FileManager.default.contents(atPath: source + "/" + file), "\(file)")
        }
        let second = try RunningTPM(folder: exported, control: scratch.directory + "/ctrl2")
        let initialised = try second.ioctl("-i")
        #expect(initialised.status == 0, "\(initialised)")
        try second.stop()
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
    }

    @Test("swtpm's encrypted files: read with --swtpm-key-file, written back as swtpm --key reads them")
    func encrypted() throws {
        let source = scratch.directory + "/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: false)
        let swtpmKey = scratch.directory + "/swtpm.key"
        let wrongSwtpmKey = scratch.directory + "/wrong.key"
        let hex = { (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined() + "\n" }
        try scratch.write(swtpmKey, Data(hex().utf8))
        try scratch.write(wrongSwtpmKey, Data(hex().utf8))
        let storeKey = scratch.directory + "/store.key"
        try scratch.write(storeKey, Data((0..<32).map { _ in UInt8.random(in: 0...255) }))
        let made = try run("/usr/bin/swtpm_setup", ["--tpm2", "--tpmstate", source, "--keyfile", swtpmKey, "--cipher", "aes-256-cbc",
                                                    "--overwrite"], within: 120)
        #expect(made.status == 0, "\(made)")
        let keyOption = ["--key", "file=\(swtpmKey),format=hex,mode=aes-256-cbc"]
        // Run it once for an encrypted volatile state too: swtpm pads to the key's 32 bytes, and
        // this blob's length needs more than 16 bytes of padding (a 16-byte PKCS#7 reader fails).
        let first = try RunningTPM(folder: source, control: scratch.directory + "/ctrl0", extra: keyOption)
        #expect(try first.ioctl("-i").status == 0)
        #expect(try first.ioctl("-v").status == 0)
        try first.stop()
        #expect(try printStates(source, keyOption).contains("volatilestate"))
        let image = try scratch.rawImage(bytes: 2 << 20)
        let noKey = try blk("state", "import", "--swtpm", source, image)
        #expect(noKey.status == 77 && noKey.stderr.contains("encrypted by swtpm"), "\(noKey)")
        let wrong = try blk("state", "import", "--swtpm", source, "--swtpm-key-file", wrongSwtpmKey, image)
        #expect(wrong.status == 77 && wrong.stderr.contains("wrong swtpm key"), "\(wrong)")
        let imported = try blk("state", "import", "--swtpm", source, "--swtpm-key-file", swtpmKey, "--key-file", storeKey, image)
        #expect(imported.status == 0, "\(imported)")

        let exported = scratch.directory + "/exported"
        #expect(try blk("state", "export", "--swtpm", exported, "--swtpm-key-file", swtpmKey, "--key-file", storeKey, image).status == 0)
        #expect(try printStates(exported, keyOption) == printStates(source, keyOption))
        let running = try RunningTPM(folder: exported, control: scratch.directory + "/ctrl", extra: keyOption)
        let initialised = try running.ioctl("-i")
        #expect(initialised.status == 0, "\(initialised)")
        try running.stop()
    }
}
