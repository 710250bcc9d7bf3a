// MapBenchmark: `blk map` beside `qemu-img map` on one sparse qcow2 image (1 TiB by default,
// 64 KiB clusters) with data scattered over it: 64 KiB written at each of `writes` random
// cluster-aligned offsets, in random order, so guest order and file order disagree and hardly
// two runs merge — the map is as long as the data is scattered, and its walk touches nearly
// every L2 table. Both formats are measured; their outputs must be the same.
import BlockLayer
import Glibc

package struct MapBenchmark {
    package let directory: String
    package let virtualBytes: Int64
    package let writes: Int
    package let rounds: Int
    package let progress: any BenchmarkProgress

    package init(directory: String, virtualBytes: Int64, writes: Int, rounds: Int, progress: any BenchmarkProgress) {
        self.directory = directory
        self.virtualBytes = virtualBytes
        self.writes = writes
        self.rounds = rounds
        self.progress = progress
    }

    private var image: String { directory + "/blk-bench-map-\(getpid()).qcow2" }

    package func run() throws(BlockError) -> [SideBySide] {
        defer { unlink(image) }
        try makeImage()
        let scenarios: [(String, [String])] = [("--output=json", ["--output=json"]), ("human", [])]
        var results: [SideBySide] = []
        for (number, (name, arguments)) in scenarios.enumerated() {
            progress.update(Double(number) / Double(scenarios.count), name)
            let description = "map \(name), \(humanSize(virtualBytes)) qcow2, \(writes) scattered 64 KiB writes"
            results.append(try SideBySide.measure(description, ["map", "-f", "qcow2"] + arguments + [image], rounds: rounds))
        }
        progress.finish()
        return results
    }

    private func makeImage() throws(BlockError) {
        let clusterBytes: Int64 = 65536
        try createBenchImage("qcow2", at: image, ImageCreateOptions(virtualSize: virtualBytes, clusterSize: Int(clusterBytes)))
        let opened = try BlockImage.open(image, options: OpenOptions(format: "qcow2", writable: true))
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(clusterBytes), alignment: 4096)
        defer { block.deallocate() }
        block.initializeMemory(as: UInt8.self, repeating: 0x5a)
        var generator = SplitMix(seed: 0x3a9)
        let clusters = UInt64(virtualBytes / clusterBytes)
        progress.update(0, "making the image")
        for _ in 0..<writes {
            let cluster = Int64(generator.next() % clusters)
            try opened.write(at: cluster * clusterBytes, from: UnsafeRawBufferPointer(block))
        }
        try opened.close()
    }
}
