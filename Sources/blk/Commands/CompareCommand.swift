// `blk compare`: whether two images hold the same guest-visible bytes, with qemu-img 7.2
// compare's words and exit codes — 0 identical, 1 different, 2 an image could not be opened,
// 3 a block status failed, 4 a read failed — which scripts test, so blk keeps them here as
// `check` keeps qemu-img check's. The rules are BlockLayer's ImageComparison.
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare two images' contents (qemu-img compare): exit 0 identical, 1 different, 2 an image could not be opened, 3 block status failed, 4 a read failed.")

    @Option(name: .customShort("f"), help: ArgumentHelp("The first image's format; probed when not given.", valueName: "format"))
    var firstFormat: String?
    @Option(name: .customShort("F"), help: ArgumentHelp("The second image's format; probed when not given.", valueName: "format"))
    var secondFormat: String?
    @Flag(name: .customShort("s"), help: "Strict: images of different sizes, or with different allocation, differ.") var strict = false
    @Flag(name: [.customShort("U"), .customLong("force-share")], help: "Open without keeping others from writing (QEMU's -U).")
    var forceShare = false
    @Flag(name: .customShort("p"), help: "Show progress even when stderr is not a terminal.") var progress = false
    @Flag(name: .customShort("q"), help: "Quiet: print nothing but errors (the exit code tells).") var quiet = false
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions
    @Argument(help: "The first image.") var first: String
    @Argument(help: "The second image.") var second: String

    static let imageNotOpened: Int32 = 2
    static let blockStatusFailed: Int32 = 3
    static let readFailed: Int32 = 4

    func run() throws {
        let images = (try open(first, format: firstFormat), try open(second, format: secondFormat))
        let bar = Progress(forced: progress && !quiet)
        let result: ImageComparison.Result
        do throws(ComparisonError) {
            result = try ImageComparison(images.0, images.1, strict: strict).run { fraction in
                if !quiet { bar.update(fraction, "") }
            }
        } catch {
            bar.finish()
            if error.reachedTail { say("Warning: Image size mismatch!") }
            let name = error.imageIndex == 0 ? first : second
            switch error.step {
            case .size:
                printError("Can't get size of \(name): \(error.cause.message)")
                throw ExitCode(Self.readFailed)
            case .blockStatus:
                printError("Sector allocation test failed for \(name): \(error.cause.message)")
                throw ExitCode(Self.blockStatusFailed)
            case .read(let byteOffset):
                printError("Error while reading offset \(byteOffset) of \(name): \(error.cause.message)")
                throw ExitCode(Self.readFailed)
            }
        }
        bar.finish()
        if result.reachedTail { say("Warning: Image size mismatch!") }
        switch result.outcome {
        case .identical:
            say("Images are identical.")
        case .contentMismatch(let byteOffset):
            say("Content mismatch at offset \(byteOffset)!")
            throw ExitCode.failure
        case .sizeMismatch:
            say("Strict mode: Image size mismatch!")
            throw ExitCode.failure
        case .statusMismatch(let byteOffset):
            say("Strict mode: Offset \(byteOffset) block status mismatch!")
            throw ExitCode.failure
        }
    }

    private func say(_ line: String) {
        if !quiet { print(line) }
    }

    /// Opens one image read-only; any failure is exit 2, as qemu-img's.
    private func open(_ path: String, format: String?) throws -> BlockImage {
        do throws(BlockError) {
            let image = try BlockImage.open(path, options: OpenOptions(format: format, forceShare: forceShare, locking: locking, lease: leases.policy))
            image.warnings.forEach(printWarning)
            return image
        } catch {
            printError(error.description)
            throw ExitCode(Self.imageNotOpened)
        }
    }
}
