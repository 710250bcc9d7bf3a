// CompareBenchmark: `blk compare` beside `qemu-img compare` on two identical images (1 GiB by
// default) — identical, so both sides go through every byte. The images users compare most are
// full of data (a disk before and after a copy), so the raw and qcow2 scenarios are fully
// allocated with random bytes; a sparse qcow2 pair shows what block status saves. Each pair is
// made, measured and removed before the next.
import BlockLayer
import Glibc

package struct CompareBenchmark {
    package let directory: String
    package let imageBytes: Int64
    package let rounds: Int
    package let progress: any BenchmarkProgress

    package init(directory: String, imageBytes: Int64, rounds: Int, progress: any BenchmarkProgress) {
        self.directory = directory
        self.imageBytes = imageBytes
        self.rounds = rounds
        self.progress = progress
    }

    private struct Scenario {
        var name: String
        var format: String
        /// Of every 16 MiB, how many MiB hold data (16: all of it).
        var dataMebibytesPer16: Int64
    }

    package func run() throws(BlockError) -> [SideBySide] {
        let scenarios = [
            Scenario(name: "raw, fully allocated random data", format: "raw", dataMebibytesPer16: 16),
            Scenario(name: "qcow2, fully allocated random data", format: "qcow2", dataMebibytesPer16: 16),
            Scenario(name: "qcow2, sparse (1 MiB of random data in every 16 MiB)", format: "qcow2", dataMebibytesPer16: 1),
        ]
        var results: [SideBySide] = []
        for (number, scenario) in scenarios.enumerated() {
            progress.update(Double(number) / Double(scenarios.count), scenario.name)
            let paths = (directory + "/blk-bench-compare-\(getpid())-a.\(scenario.format)",
                         directory + "/blk-bench-compare-\(getpid())-b.\(scenario.format)")
            defer {
                unlink(paths.0)
                unlink(paths.1)
            }
            try makePair(paths, scenario)
            results.append(try SideBySide.measure("\(scenario.name), \(humanSize(imageBytes)), identical",
                                                  ["compare", "-f", scenario.format, "-F", scenario.format, paths.0, paths.1],
                                                  rounds: rounds))
        }
        progress.finish()
        return results
    }

    /// Two images with the same bytes: each chunk is made once and written to both.
    private func makePair(_ paths: (String, String), _ scenario: Scenario) throws(BlockError) {
        var images: [BlockImage] = []
        for path in [paths.0, paths.1] {
            try createBenchImage(scenario.format, at: path, ImageCreateOptions(virtualSize: imageBytes))
            images.append(try BlockImage.open(path, options: OpenOptions(format: scenario.format, writable: true)))
        }
        let chunkBytes: Int64 = 1 << 20
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunkBytes), alignment: 4096)
        defer { chunk.deallocate() }
        var generator = SplitMix(seed: 0xc0de)
        var offset: Int64 = 0
        while offset < imageBytes {
            let count = Int(min(chunkBytes, imageBytes - offset))
            if (offset / chunkBytes) % 16 < scenario.dataMebibytesPer16 {
                let words = chunk.bindMemory(to: UInt64.self)
                for index in words.indices { words[index] = generator.next() }
                for image in images { try image.write(at: offset, from: UnsafeRawBufferPointer(rebasing: chunk[0..<count])) }
            }
            offset += Int64(count)
        }
        for image in images { try image.close() }
    }
}
