// ImageBenchOptions: what the benches that time blk beside qemu-img on images of one size share
// (`blk bench compare`, `rebase`, `commit`): the options and their checks.
import ArgumentParser
import BlockCLI

struct ImageBenchOptions: ParsableArguments {
    @Option(help: "The size of each image.") var size = ByteCount(1 << 30)
    @Option(help: "Runs of each side; the best is reported (interference only adds time).") var rounds = 5
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard (1...1000).contains(rounds), size.value >= 1 << 20 else { throw ValidationError("--rounds takes 1 to 1000, --size 1M or more") }
    }
}
